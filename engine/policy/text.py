"""Text as valid Unicode: the one repair of surrogates that JSON and YAML escapes let through.

``"\\ud83d\\ude00"`` is how JSON (and YAML, which is a superset) writes an emoji outside the
Basic Multilingual Plane; a lenient parser hands it over as two halves, and a string cut in
the wrong place keeps one half alone. Neither can be encoded as UTF-8: not by the JsonLogic
library, not by any database driver.
"""

from __future__ import annotations

__all__ = ["joined_surrogates"]


def joined_surrogates(text: str) -> str:
    """``text`` with each split surrogate pair joined into its character and each lone
    surrogate replaced by U+FFFD; ``text`` itself when it has none."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # UTF-16 holds the halves as they are; decoding pairs them, or replaces a lone one.
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text
