"""The prompt text of an OpenAI-style request body, for routing by prefix (not for serving: the replica
applies the chat template itself). Anything unreadable gives "": the request is routed without a prefix."""

from __future__ import annotations

import json
from typing import Any


def prompt_text(body: bytes) -> str:
    """Chat messages in order (role and text of each) or a completion prompt; "" when there is none."""
    try:
        data: Any = json.loads(body) if body else None
    except (ValueError, UnicodeDecodeError):
        return ""
    if not isinstance(data, dict):
        return ""
    messages = data.get("messages")
    if isinstance(messages, list):
        parts = []
        for message in messages:
            if isinstance(message, dict):
                content = message.get("content")
                if isinstance(content, list):  # content parts: keep the text ones
                    content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
                parts.append(f"<{message.get('role', '')}>{content if isinstance(content, str) else ''}")
        return "".join(parts)
    prompt = data.get("prompt")
    if isinstance(prompt, list):
        prompt = prompt[0] if prompt and isinstance(prompt[0], str) else ""
    return prompt if isinstance(prompt, str) else ""
