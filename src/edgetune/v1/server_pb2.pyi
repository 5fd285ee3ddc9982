from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PluginOrigin(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PLUGIN_ORIGIN_UNSPECIFIED: _ClassVar[PluginOrigin]
    PLUGIN_ORIGIN_BUILTIN: _ClassVar[PluginOrigin]
    PLUGIN_ORIGIN_ENTRY_POINT: _ClassVar[PluginOrigin]
    PLUGIN_ORIGIN_MODULE: _ClassVar[PluginOrigin]
PLUGIN_ORIGIN_UNSPECIFIED: PluginOrigin
PLUGIN_ORIGIN_BUILTIN: PluginOrigin
PLUGIN_ORIGIN_ENTRY_POINT: PluginOrigin
PLUGIN_ORIGIN_MODULE: PluginOrigin

class Plugin(_message.Message):
    __slots__ = ("name", "origin", "distribution", "distribution_version", "module")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    DISTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    DISTRIBUTION_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODULE_FIELD_NUMBER: _ClassVar[int]
    name: str
    origin: PluginOrigin
    distribution: str
    distribution_version: str
    module: str
    def __init__(self, name: _Optional[str] = ..., origin: _Optional[_Union[PluginOrigin, str]] = ..., distribution: _Optional[str] = ..., distribution_version: _Optional[str] = ..., module: _Optional[str] = ...) -> None: ...

class Task(_message.Message):
    __slots__ = ("name", "description", "input_kinds", "plugin")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    INPUT_KINDS_FIELD_NUMBER: _ClassVar[int]
    PLUGIN_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    input_kinds: _containers.RepeatedScalarFieldContainer[str]
    plugin: str
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., input_kinds: _Optional[_Iterable[str]] = ..., plugin: _Optional[str] = ...) -> None: ...

class Limits(_message.Message):
    __slots__ = ("max_batch_size", "max_text_bytes", "max_message_bytes")
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_TEXT_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    max_batch_size: int
    max_text_bytes: int
    max_message_bytes: int
    def __init__(self, max_batch_size: _Optional[int] = ..., max_text_bytes: _Optional[int] = ..., max_message_bytes: _Optional[int] = ...) -> None: ...

class GetServerInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ServerInfo(_message.Message):
    __slots__ = ("version", "plugins", "tasks", "execution_providers", "limits", "onnxruntime_version", "memory", "ready", "model_control", "capabilities")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PLUGINS_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    ONNXRUNTIME_VERSION_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    MODEL_CONTROL_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    version: str
    plugins: _containers.RepeatedCompositeFieldContainer[Plugin]
    tasks: _containers.RepeatedCompositeFieldContainer[Task]
    execution_providers: _containers.RepeatedScalarFieldContainer[str]
    limits: Limits
    onnxruntime_version: str
    memory: Memory
    ready: bool
    model_control: str
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, version: _Optional[str] = ..., plugins: _Optional[_Iterable[_Union[Plugin, _Mapping]]] = ..., tasks: _Optional[_Iterable[_Union[Task, _Mapping]]] = ..., execution_providers: _Optional[_Iterable[str]] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., onnxruntime_version: _Optional[str] = ..., memory: _Optional[_Union[Memory, _Mapping]] = ..., ready: _Optional[bool] = ..., model_control: _Optional[str] = ..., capabilities: _Optional[_Iterable[str]] = ...) -> None: ...

class Memory(_message.Message):
    __slots__ = ("resident_bytes", "models_bytes", "budget_bytes")
    RESIDENT_BYTES_FIELD_NUMBER: _ClassVar[int]
    MODELS_BYTES_FIELD_NUMBER: _ClassVar[int]
    BUDGET_BYTES_FIELD_NUMBER: _ClassVar[int]
    resident_bytes: int
    models_bytes: int
    budget_bytes: int
    def __init__(self, resident_bytes: _Optional[int] = ..., models_bytes: _Optional[int] = ..., budget_bytes: _Optional[int] = ...) -> None: ...
