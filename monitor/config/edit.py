"""Adding feeds to the config file's text, leaving every other byte as it was.

The new entries are inserted as lines right after the last feed of the `feeds:` list, in its
indentation and style (block `- name: …` or flow `- {name: …, url: …}`), each with its title as
a comment; a file without feeds gets a `feeds:` section. Comments, blank lines, quoting, anchors
and `${VAR}` references elsewhere stay exactly as they were. (A YAML round trip, even
ruamel.yaml's, re-indents what it does not recognise and moves the comment after the last feed
below the new ones; inserting lines cannot.) A `feeds: [ … ]` list on one line is not edited.

Pure text in, text out: the caller reads the file, checks the result loads, and writes it.
"""

from __future__ import annotations

from collections.abc import Sequence

import yaml

from monitor.core.opml import ImportedFeed

__all__ = ["EditError", "add_feeds", "feed_entries"]


class EditError(ValueError):
    """The file's `feeds:` is written in a way these lines cannot be added to."""


def feed_entries(feeds: Sequence[ImportedFeed], indent: str = "  ", flow: bool = False) -> str:
    """The YAML lines of `feeds` as items of the `feeds:` list, each ending with a newline."""
    lines = []
    for feed in feeds:
        comment = _comment(feed)
        if flow:
            lines.append(
                f"{indent}- {{name: {_scalar(feed.name)}, url: {_scalar(feed.url)}}}{comment}"
            )
        else:
            lines.append(f"{indent}- name: {_scalar(feed.name)}{comment}")
            lines.append(f"{indent}  url: {_scalar(feed.url)}")
    return "".join(line + "\n" for line in lines)


def add_feeds(text: str, feeds: Sequence[ImportedFeed]) -> str:
    """`text` with `feeds` added to its `feeds:` list. Raises EditError."""
    newline = "\r\n" if "\r\n" in text else "\n"
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise EditError(f"the file is not valid YAML ({exc})") from None
    if root is None:
        root = yaml.MappingNode("tag:yaml.org,2002:map", [])
    if not isinstance(root, yaml.MappingNode) or root.flow_style:
        raise EditError("the file is not a mapping of sections written one per line")
    key, value = next(((k, v) for k, v in root.value if k.value == "feeds"), (None, None))
    if key is None or value is None:
        ending = "" if not text or text.endswith("\n") else newline
        return text + ending + _lines("feeds:\n" + feed_entries(feeds), newline)
    if isinstance(value, yaml.ScalarNode) and value.tag == "tag:yaml.org,2002:null":
        # `feeds:` with nothing after it (or null, ~): the entries go below it.
        start, end = value.start_mark.index, value.end_mark.index
        text = text[:start] + text[end:] if start < end else text
        return _insert(text, _line_end(text, key.end_mark.index), feeds, "  ", False, newline)
    if not isinstance(value, yaml.SequenceNode) or value.flow_style or not value.value:
        raise EditError(
            "feeds is not written as a list of one entry per line (- name: …): add the entries "
            "by hand"
        )
    first, last = value.value[0], value.value[-1]
    line_start = text.rfind("\n", 0, first.start_mark.index) + 1
    dash = text.rfind("-", line_start, first.start_mark.index)
    if dash < 0:
        raise EditError("cannot tell where the feeds list's items start")
    flow = isinstance(last, yaml.MappingNode) and bool(last.flow_style)
    indent = " " * (dash - line_start)
    return _insert(text, _line_end(text, _end_of(last)), feeds, indent, flow, newline)


def _insert(
    text: str, at: int, feeds: Sequence[ImportedFeed], indent: str, flow: bool, newline: str
) -> str:
    """`text` with the entries as lines after the line that ends at `at`."""
    added = _lines(feed_entries(feeds, indent, flow), newline)
    if at >= len(text):
        return text + newline + added
    return text[: at + len(newline)] + added + text[at + len(newline) :]


def _end_of(node: yaml.Node) -> int:
    """Where the last value of a block item ends (a block mapping's own end is the next line)."""
    if isinstance(node, yaml.MappingNode) and not node.flow_style and node.value:
        return _end_of(node.value[-1][1])
    if isinstance(node, yaml.SequenceNode) and not node.flow_style and node.value:
        return _end_of(node.value[-1])
    return int(node.end_mark.index)


def _line_end(text: str, index: int) -> int:
    """Where the line break after `index` starts (len(text) if there is none)."""
    end = text.find("\n", index)
    if end < 0:
        return len(text)
    return end - 1 if text[end - 1 : end] == "\r" else end


def _lines(text: str, newline: str) -> str:
    return text.replace("\n", newline)


def _scalar(value: str) -> str:
    dumped = yaml.safe_dump(value, allow_unicode=True, width=1_000_000, default_flow_style=True)
    return dumped.removesuffix("\n...\n").strip()


def _comment(feed: ImportedFeed) -> str:
    about = " · ".join(part for part in (feed.title, *feed.folders) if part)
    about = " ".join(about.split())  # one line
    return f"  # {about}" if about else ""
