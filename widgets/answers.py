"""The panel of recently finished requests: prompt and answer as text (token ids for models without a
tokenizer), newest first. Answers are decoded once per request, on the refresher thread."""
from __future__ import annotations

import html
from typing import Any, Callable

import ipywidgets as W


class AnswersPanel:
    def __init__(self, tokenizer: Any = None, prompt_text: Callable[[Any], str | None] | None = None, rows: int = 6,
                 width: str = "760px"):
        self.tokenizer, self.prompt_text, self.rows = tokenizer, prompt_text or (lambda rid: None), rows
        self.widget = W.HTML(layout=W.Layout(width=width))
        self.widget.add_class("pie-answers")
        self._decoded: dict[Any, tuple[str, str]] = {}
        self._last: tuple | None = None
        self.entries: list[dict] = []
        self.widget.value = self._html()

    def _text(self, out) -> tuple[str, str]:
        if out.request_id not in self._decoded:
            if self.tokenizer is None:
                prompt, answer = f"{len(out.prompt_token_ids)} token ids", str(out.token_ids[:12])
            else:
                prompt = self.prompt_text(out.request_id) or \
                    self.tokenizer.decode(out.prompt_token_ids, skip_special_tokens=True)
                answer = self.tokenizer.decode(out.token_ids, skip_special_tokens=True).strip()
            self._decoded[out.request_id] = (prompt, answer)
            if len(self._decoded) > 4 * self.rows:
                self._decoded.pop(next(iter(self._decoded)))
        return self._decoded[out.request_id]

    def update(self, outputs: list) -> bool:
        """`outputs`: finished RequestOutputs, oldest first. Returns True when the panel changed."""
        recent = outputs[-self.rows:][::-1]
        key = tuple(o.request_id for o in recent)
        if key == self._last:
            return False
        self._last = key
        self.entries = []
        for o in recent:
            prompt, answer = self._text(o)
            self.entries.append(dict(request_id=o.request_id, prompt=prompt, answer=answer, tokens=len(o.token_ids),
                                     finish_reason=o.finish_reason))
        self.widget.value = self._html()
        return True

    def _html(self) -> str:
        head = "<b>recently finished requests</b>"
        if not self.entries:
            return f"{head}<div style='color:#888'>none yet</div>"
        cell = "style='border-top:1px solid #eee;padding:2px 6px;vertical-align:top'"
        rows = "".join(
            f"<tr><td {cell}>{html.escape(str(e['request_id']))}</td><td {cell}>{html.escape(e['prompt'])}</td>"
            f"<td {cell}>{html.escape(e['answer'])}</td><td {cell}>{e['tokens']} ({html.escape(e['finish_reason'])})</td></tr>"
            for e in self.entries)
        return (f"{head}<table style='border-collapse:collapse;font-size:12px'><tr><th>id</th><th>prompt</th>"
                f"<th>answer</th><th>tokens</th></tr>{rows}</table>")
