#!/usr/bin/python3
"""Renders docs/patch-format.md as the man page swpatch-patch(5).

docs/patch-format.md is the single source of the patch file format; this script only
translates the subset of Markdown it uses (headings, paragraphs, fenced code, tables,
lists, inline code, bold, links) into man(7) macros, so the two never drift apart.
Usage: md2man.py SOURCE.md DATE VERSION > swpatch-patch.5
"""
import re
import sys


def escape(text):
    return text.replace("\\", "\\e")


def inline(text):
    text = escape(text)
    text = re.sub(r"\[([^\]]+)\]\([^)]*\)", r"\1", text)  # links: keep the words
    text = re.sub(r"`([^`]+)`", lambda m: "\\fB" + m.group(1).replace("-", "\\-") + "\\fR", text)
    text = re.sub(r"\*\*([^*]+)\*\*", r"\\fB\1\\fR", text)
    return text


def line(text):
    # A line starting with . or ' would be read as a request.
    return "\\&" + text if text[:1] in (".", "'") else text


def cells(row):
    return [c.strip() for c in row.strip().strip("|").split("|")]


def render(lines, date, version):
    out = [
        '.TH "SWPATCH\\-PATCH" "5" "%s" "swpatch %s" "File Formats Manual"' % (date, version),
        ".SH NAME",
        "swpatch\\-patch \\- the patch file format of swpatch(1)",
    ]
    i, first_heading = 0, True
    paragraph = []

    def flush():
        if paragraph:
            out.append(".PP")
            out.extend(line(inline(p)) for p in paragraph)
            paragraph.clear()

    while i < len(lines):
        text = lines[i].rstrip("\n")
        if text.startswith("```"):
            flush()
            out += [".PP", ".RS 4", ".nf"]
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                out.append(line(escape(lines[i].rstrip("\n"))))
                i += 1
            out += [".fi", ".RE"]
        elif text.startswith("# "):
            flush()
            if first_heading:
                out.append(".SH DESCRIPTION")
                first_heading = False
        elif text.startswith("## "):
            flush()
            out.append(".SH " + inline(text[3:]).upper().replace("\\FB", "\\fB").replace("\\FR", "\\fR"))
        elif text.startswith("|"):
            flush()
            header = cells(text)
            i += 2  # the header and the |---| line
            while i < len(lines) and lines[i].startswith("|"):
                row = cells(lines[i])
                facts = "; ".join("%s: %s" % (h, c) for h, c in zip(header[1:-1], row[1:-1]))
                out += [".TP", line(inline(row[0])), line(inline("(%s) %s" % (facts, row[-1])))]
                i += 1
            continue
        elif re.match(r"^(- |\d+\. )", text):
            flush()
            mark = re.match(r"^(- |\d+\. )", text).group(1)
            item = [text[len(mark):]]
            while i + 1 < len(lines) and lines[i + 1].startswith("  ") and lines[i + 1].strip():
                i += 1
                item.append(lines[i].strip())
            tag = "\\(bu" if mark == "- " else mark.strip()
            out.append(".IP %s 4" % tag)
            out.extend(line(inline(p)) for p in item)
        elif not text.strip():
            flush()
        else:
            paragraph.append(text.strip())
        i += 1
    flush()
    out += [".SH SEE ALSO", "swpatch(1)"]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as source:
        sys.stdout.write(render(source.readlines(), sys.argv[2], sys.argv[3]))
