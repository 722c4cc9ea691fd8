"""lm-eval's model interface over a checkpoint's plain-torch forward (evaluation.harness_model:
native).

Why: lm-eval's `HFLM` needs transformers, whose import costs an evaluation job more than the
evaluation (archscale.training.llama_forward says why). lm-eval's `TemplateLM` leaves a backend
three things to supply: tokenizing, scoring token sequences and generating. This class scores
the way `HFLM` scores a causal model, so the figures are the same:

- text is encoded with the checkpoint's own tokenizer.json, special tokens added only as the
  tokenizer's post-processor adds them (none for this project's tokenizer), and not when the
  text already starts with the prefix token;
- an input is the last `max_length + 1` tokens of context + continuation minus the final one;
  requests are sorted longest first and scored `batch_size` at a time, right-padded with token
  0; each continuation's log-probabilities come from a float32 log-softmax, and `is_greedy`
  says whether argmax reproduces it;
- rolling log-likelihoods use lm-eval's own disjoint rolling windows.

Generation (`generate_until`, e.g. coqa) is handed to lm-eval's `HFLM` on the same checkpoint,
built only when a task asks for it, so only generative tasks pay for transformers.
`tests/test_evaluate.py` compares every figure with `HFLM`'s on the same checkpoint.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from lm_eval.api.model import TemplateLM

from archscale.training.llama_forward import LlamaForward


class CheckpointLM(TemplateLM):
    """An lm-eval model on a saved checkpoint directory, scored by `LlamaForward`."""

    def __init__(self, model_dir: str | os.PathLike, device: str = "cpu", batch_size: int = 16,
                 max_length: int | None = None, dtype: str = "float32",
                 model: LlamaForward | None = None):
        """`model`: the checkpoint's forward when the caller has loaded it (an evaluation job
        computes the validation loss with it first); else it is read from `model_dir`."""
        super().__init__()
        from tokenizers import Tokenizer

        self.model_dir = Path(model_dir)
        self._device = torch.device(device)
        self._batch_size = int(batch_size)
        self._dtype = dtype
        self.model = model if model is not None else LlamaForward.load(model_dir, device=device)
        config = json.loads((self.model_dir / "config.json").read_text())
        self._max_length = int(max_length or config.get("max_position_embeddings") or 2048)
        self.tokenizer = Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
        names = {}
        config_path = self.model_dir / "tokenizer_config.json"
        if config_path.is_file():
            names = json.loads(config_path.read_text())
        self._eos = self._token_id(names.get("eos_token"), config.get("eos_token_id"))
        self._bos = self._token_id(names.get("bos_token"), config.get("bos_token_id"))
        if self._eos is None:
            raise ValueError(f"{self.model_dir}: no eos token in tokenizer_config.json or "
                             "config.json; lm-eval needs one to end generations")
        self._generator = None

    def _token_id(self, token: Any, fallback: Any) -> int | None:
        """A special token's id from its text (as transformers resolves it), else the config's."""
        if isinstance(token, dict):  # {"content": "<|endoftext|>", ...}
            token = token.get("content")
        if isinstance(token, str) and self.tokenizer.token_to_id(token) is not None:
            return int(self.tokenizer.token_to_id(token))
        if isinstance(fallback, list):
            fallback = fallback[0] if fallback else None
        return None if fallback is None else int(fallback)

    # --- what lm-eval reads ---------------------------------------------------------------
    @property
    def eot_token_id(self) -> int:
        return self._eos

    @property
    def prefix_token_id(self) -> int:
        return self._bos if self._bos is not None else self._eos

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @property
    def device(self) -> torch.device:
        return self._device

    def tok_encode(self, string: str, add_special_tokens: bool | None = None,
                   **kwargs: Any) -> list[int]:
        if add_special_tokens is None:
            prefix = self.tokenizer.decode([self.prefix_token_id], skip_special_tokens=False)
            add_special_tokens = not (prefix and string.startswith(prefix))
        return self.tokenizer.encode(string, add_special_tokens=add_special_tokens).ids

    def tok_decode(self, tokens: list[int], skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=skip_special_tokens)

    # --- scoring ----------------------------------------------------------------------------
    def _loglikelihood_tokens(self, requests: list[tuple[Any, list[int], list[int]]],
                              disable_tqdm: bool = False,
                              override_bs: int | None = None) -> list[tuple[float, bool]]:
        """(sum of continuation log-probs, whether greedy decoding reproduces it) per request,
        in the order given."""
        order = sorted(range(len(requests)),
                       key=lambda i: (-len(requests[i][1] + requests[i][2]),
                                      tuple(requests[i][1] + requests[i][2])))
        size = override_bs or self._batch_size
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        for start in range(0, len(order), size):
            chunk = order[start:start + size]
            inputs = []
            for i in chunk:
                _, context, continuation = requests[i]
                if not context or not continuation:
                    raise ValueError("a loglikelihood request needs a context and a "
                                     "continuation token each")
                inputs.append((context + continuation)[-(self._max_length + 1):][:-1])
            width = max(len(row) for row in inputs)
            batch = torch.zeros((len(inputs), width), dtype=torch.long)
            for row, tokens in enumerate(inputs):
                batch[row, :len(tokens)] = torch.tensor(tokens, dtype=torch.long)
            log_probs = F.log_softmax(self.model(batch), dim=-1, dtype=torch.float32).cpu()
            for row, i in enumerate(chunk):
                continuation = requests[i][2]
                end = len(inputs[row])
                scored = log_probs[row, end - len(continuation):end]
                target = torch.tensor(continuation, dtype=torch.long)
                greedy = bool((scored.argmax(dim=-1) == target).all())
                total = float(scored.gather(1, target[:, None]).sum())
                results[i] = (total, greedy)
                if requests[i][0] is not None:
                    self.cache_hook.add_partial("loglikelihood", requests[i][0],
                                                (total, greedy))
        return results  # type: ignore[return-value]

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        """Log-likelihood of whole texts over lm-eval's disjoint rolling windows."""
        from lm_eval import utils

        totals = []
        for request in requests:
            (text,) = request.args
            windows = [(None,) + utils.make_disjoint_window(window)
                       for window in utils.get_rolling_token_windows(
                           token_list=self.tok_encode(text), prefix_token=self.prefix_token_id,
                           max_seq_len=self._max_length, context_len=1)]
            total = sum(score for score, _ in self._loglikelihood_tokens(windows))
            self.cache_hook.add_partial("loglikelihood_rolling", (text,), total)
            totals.append(total)
        return totals

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        """Generation through lm-eval's HFLM on the same checkpoint (built on first use)."""
        if self._generator is None:
            from lm_eval.models.huggingface import HFLM

            from archscale.hf_compat import allow_decoupled_head_dim

            allow_decoupled_head_dim()
            self._generator = HFLM(pretrained=str(self.model_dir), device=str(self._device),
                                   dtype=self._dtype, batch_size=self._batch_size,
                                   max_length=self._max_length)
        return self._generator.generate_until(requests, disable_tqdm=disable_tqdm)
