"""A tiny transformers model that reads its notes, built and trained in seconds.

Word-level vocabulary; a 2-layer Llama taught one skill: with a note "The
code of blue is tulip." in its context it answers "What is the code of blue?"
with "tulip"; with no note it only repeats the colour ("blue"). So a code is
something it can only know from its notes, and consolidation has to move it
into the weights. (Repeating the colour keeps the question's colour in the
last position's state, where a small adapter can map it to a code.)
The prompts are the exact ones a reader session sends (``assemble_prompt``).
"""

from __future__ import annotations

import random
from pathlib import Path

import torch

from lifelong.context.notes import render_notes
from lifelong.context.session import assemble_prompt, task_text

COLORS = ["blue", "red", "green", "yellow", "black", "white", "orange", "purple"]
CODES = ["tulip", "maple", "cedar", "lotus", "birch", "aspen", "lilac", "poppy"]
WORDS = ["##", "Notes", "Task", "-", "[", "]", "1", "2", "3", "4", "5", "The", "code", "of", "is", ".", "Question",
         ":", "What", "the", "?", "Answer"] + COLORS + CODES


def question(color: str) -> str:
    return f"Question: What is the code of {color}?"


def note(color: str, code: str) -> str:
    return f"The code of {color} is {code}."


def reader_prompt(q: str, notes: list[tuple[int, str]] | None = None) -> str:
    return assemble_prompt(render_notes(notes or []), [], task_text(q))


def build(folder: Path, steps: int = 200, seed: int = 0) -> Path:
    """Train the tiny reader and save it (model + tokenizer) as a transformers folder."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<bos>": 1, "<eos>": 2, "<unk>": 3}
    for w in WORDS:
        vocab.setdefault(w, len(vocab))
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<bos>", eos_token="<eos>",
                                  pad_token="<pad>", unk_token="<unk>")
    cfg = LlamaConfig(vocab_size=len(vocab), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
                      bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small only loses time to thread hand-offs
    try:
        torch.manual_seed(seed)
        model = LlamaForCausalLM(cfg)
        rng = random.Random(seed)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        for _ in range(steps):
            rows = []
            for _ in range(32):
                color, code = rng.choice(COLORS), rng.choice(CODES)
                if rng.random() < 0.25:  # no note: it cannot know, and says which colour it was asked
                    prompt, answer = reader_prompt(question(color)), color
                else:
                    prompt, answer = reader_prompt(question(color), [(rng.randint(1, 5), note(color, code))]), code
                rows.append(tok(prompt)["input_ids"] + [vocab[answer], 2])
            width = max(map(len, rows))
            x = torch.tensor([r + [0] * (width - len(r)) for r in rows])
            labels = torch.tensor([[-100] * (len(r) - 2) + r[-2:] + [-100] * (width - len(r)) for r in rows])
            loss = model(input_ids=x, attention_mask=(x != 0).long(), labels=labels).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    model.generation_config.pad_token_id = 0
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder
