"""An app whose import fails (`apps.broken:durably`)."""

raise RuntimeError("this module is broken on purpose")
