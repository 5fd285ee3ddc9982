"""GPT-2-family (decoder) classifiers fine-tune, export and serve like encoders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fakes import sentiment_rows
from grpc import aio
from test_finetune import FAST, watch_to_end

from edgetune.v1 import finetuning_pb2 as pb
from edgetune.v1 import finetuning_pb2_grpc, inference_pb2_grpc
from edgetune.v1 import inference_pb2 as ipb


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer GPT-2 with a byte-level BPE tokenizer trained here, and no pad token."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2TokenizerFast

    folder = tmp_path_factory.mktemp("tiny-gpt2")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator([row["text"] for row in sentiment_rows(200)], trainer)
    eos = "<|endoftext|>"
    tokenizer = GPT2TokenizerFast(tokenizer_object=bpe, bos_token=eos, eos_token=eos, unk_token=eos)
    assert tokenizer.pad_token is None
    tokenizer.save_pretrained(folder)
    config = GPT2Config(
        vocab_size=bpe.get_vocab_size(),
        n_embd=32,
        n_layer=2,
        n_head=2,
        n_positions=64,
        bos_token_id=bpe.token_to_id(eos),
        eos_token_id=bpe.token_to_id(eos),
        num_labels=2,
    )
    torch.manual_seed(0)
    GPT2ForSequenceClassification(config).save_pretrained(folder)
    return folder


async def test_gpt2_fine_tunes_and_serves_padded_batches(
    channel: aio.Channel, tiny_gpt2: Path
) -> None:
    jobs = finetuning_pb2_grpc.FineTuningStub(channel)
    job = await jobs.CreateJob(
        pb.CreateJobRequest(
            task="text-classification",
            base_path=str(tiny_gpt2),
            model_name="gpt2-sentiment",
            auto_promote=True,
            examples=pb.Examples(examples=[pb.Example(**r) for r in sentiment_rows(60)]),
            hyperparameters=FAST,
        )
    )
    events = await watch_to_end(jobs, job.id)
    final = await jobs.GetJob(pb.GetJobRequest(id=job.id))
    assert final.state == pb.JOB_STATE_SUCCEEDED, (final.error, [e.message for e in events])

    stub = inference_pb2_grpc.InferenceStub(channel)
    texts = ["great", "the movie was very boring and the plot was bad"]

    async def scores(batch: list[str]) -> list[list[float]]:
        reply = await stub.Classify(
            ipb.ClassifyRequest(model="gpt2-sentiment", inputs=[ipb.Input(text=t) for t in batch])
        )
        return [[s.score for s in sorted(r.labels, key=lambda s: s.label)] for r in reply.results]

    together = await scores(texts)
    alone = [(await scores([text]))[0] for text in texts]
    # Right padding with the EOS-as-pad token must not change a shorter input's answer. (Up
    # to 1e-3: dynamic int8 scales activations per batch; reading a pad token instead of the
    # last real one moves scores by tenths.)
    np.testing.assert_allclose(together, alone, atol=1e-3)
