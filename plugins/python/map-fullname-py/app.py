"""map-fullname-py: map-fullname in Python, built with componentize-py.

CRM contacts in, mailing-list subscribers out: firstName + lastName become
fullName; a contact without an email is dropped; deletes pass through with
the same key. Its output is byte for byte the Rust plugin's.
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import config
from wit_world.imports.types import Op, PluginError_Fatal, Record


def text(value):
    """A field's text, trimmed; anything else is empty."""
    return value.strip() if isinstance(value, str) else ""


def map_contact(contact):
    """The subscriber for one contact, or None when it has no email."""
    email = text(contact.get("email"))
    if not email:
        return None
    parts = [text(contact.get("firstName")), text(contact.get("lastName"))]
    subscriber = {"fullName": " ".join(p for p in parts if p), "email": email}
    company = text(contact.get("company"))
    if company:
        subscriber["organization"] = company
    return subscriber


_target = None


def target_stream():
    """The output stream, from the configuration: read once per instance
    (it never changes for one, and the host audits each read)."""
    global _target
    if _target is None:
        _target = json.loads(config.get()).get("target_stream") or "subscribers"
    return _target


class Transform(exports.Transform):
    def transform(self, batch):
        target = target_stream()
        out = []
        for record in batch:
            if record.op == Op.DELETE:
                out.append(Record(target, record.key, record.op, record.data, record.source_timestamp))
                continue
            try:
                contact = json.loads(record.data)
                if not isinstance(contact, dict):
                    raise ValueError("expected a JSON object")
            except ValueError as e:
                raise Err(PluginError_Fatal(
                    f"record {record.key} in stream {record.stream}: data does not match the expected shape: {e}"
                ))
            subscriber = map_contact(contact)
            if subscriber is not None:
                data = json.dumps(subscriber, separators=(",", ":"), ensure_ascii=False)
                out.append(Record(target, record.key, Op.UPSERT, data, record.source_timestamp))
        return out
