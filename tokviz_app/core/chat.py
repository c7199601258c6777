"""Chat messages, as `Model.start_chat` takes them and a session keeps them: checked once, here."""

from __future__ import annotations

from .errors import TokvizError

ROLES = ("system", "user", "assistant")
Message = dict[str, str]  # {"role": one of ROLES, "content": text}


def check_messages(messages: object) -> list[Message]:
    """Copies of `messages`, each {"role", "content"} with a known role and text content, at least one
    from the user; anything else raises TokvizError with one sentence."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise TokvizError("A chat needs a list of messages with at least one user message.")
    checked: list[Message] = []
    for n, message in enumerate(messages, 1):
        if not isinstance(message, dict):
            raise TokvizError(f"Message {n} of the chat is not a role and a content.")
        unknown = sorted(str(k) for k in message if k not in ("role", "content"))
        if unknown:
            raise TokvizError(f"Message {n} of the chat has an unknown field '{unknown[0]}'; a chat message has "
                              "only a role and a content.")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise TokvizError(f"Message {n} of the chat has the role {role!r}; a role is system, user or "
                              "assistant.")
        if not isinstance(content, str):
            raise TokvizError(f"The content of message {n} of the chat must be text.")
        checked.append({"role": role, "content": content})
    if not any(m["role"] == "user" for m in checked):
        raise TokvizError("A chat needs at least one user message.")
    return checked


def no_template(label: str) -> TokvizError:
    return TokvizError(f"The model {label} has no chat template, so it cannot start a chat; write a plain prompt "
                       "instead.")
