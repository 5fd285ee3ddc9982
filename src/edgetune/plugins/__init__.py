"""edgetune's plugin system (pluggy, project name "edgetune").

A plugin is a module with functions marked `@hookimpl` that implement hooks from
`edgetune.plugins.hookspecs`. Third-party distributions declare it in the `edgetune`
entry-point group; built-in tasks are plugins registered the same way.
"""

import pluggy

PROJECT_NAME = "edgetune"
ENTRY_POINT_GROUP = "edgetune"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

__all__ = ["ENTRY_POINT_GROUP", "PROJECT_NAME", "hookimpl", "hookspec"]
