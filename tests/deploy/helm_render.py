"""A small renderer for the subset of Helm's Go templates that deploy/helm/valley uses.

Debian has no helm package and nothing else may be downloaded, so CI renders the chart with
this instead: {{ .Values.a.b }}, {{ .Release.Name }}, {{ .Chart.Name }}, pipes `| quote`,
`{{- if X }} ... {{- end }}` (nested), and the `{{-` / `-}}` whitespace trimming. Anything
else raises, so the chart cannot silently grow beyond what is checked here.
"""
import re
import yaml

TAG = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.S)


def _lookup(path, ctx):
    if not path.startswith("."):
        raise ValueError(f"unsupported template expression: {path!r}")
    cur = ctx
    for part in path[1:].split("."):
        if not isinstance(cur, dict) or part not in cur:
            raise KeyError(f"missing value {path}")
        cur = cur[part]
    return cur


def _eval(expr, ctx):
    parts = [p.strip() for p in expr.split("|")]
    val = _lookup(parts[0], ctx)
    for fn in parts[1:]:
        if fn == "quote":
            val = '"' + str(val).replace('"', '\\"') + '"'
        else:
            raise ValueError(f"unsupported template function: {fn!r}")
    if isinstance(val, bool):
        return "true" if val else "false"
    return str(val)


def render_text(text, ctx):
    # Tokenize into literal text and tags, applying whitespace trimming.
    out, pos, tokens = [], 0, []
    for m in TAG.finditer(text):
        tokens.append(("text", text[pos:m.start()]))
        tokens.append(("tag", m.group(1) == "-", m.group(2), m.group(3) == "-"))
        pos = m.end()
    tokens.append(("text", text[pos:]))
    for i, t in enumerate(tokens):
        if t[0] != "tag":
            continue
        if t[1] and i > 0:
            tokens[i - 1] = ("text", tokens[i - 1][1].rstrip(" \t\n"))
        if t[3] and i + 1 < len(tokens):
            tokens[i + 1] = ("text", tokens[i + 1][1].lstrip(" \t\n"))
    stack = [True]  # are we emitting?
    for t in tokens:
        if t[0] == "text":
            if all(stack):
                out.append(t[1])
            continue
        expr = t[2]
        if expr.startswith("if "):
            cond = _lookup(expr[3:].strip(), ctx) if all(stack) else False
            stack.append(bool(cond))
        elif expr == "else":
            stack[-1] = not stack[-1]
        elif expr == "end":
            if len(stack) == 1:
                raise ValueError("unbalanced {{ end }}")
            stack.pop()
        elif all(stack):
            out.append(_eval(expr, ctx))
    if len(stack) != 1:
        raise ValueError("unterminated {{ if }}")
    return "".join(out)


def render_chart(chart_dir, release="valley", overrides=None):
    """Returns a list of (template name, rendered text) for every template of the chart."""
    import pathlib

    chart_dir = pathlib.Path(chart_dir)
    chart = yaml.safe_load((chart_dir / "Chart.yaml").read_text())
    values = yaml.safe_load((chart_dir / "values.yaml").read_text())
    for k, v in (overrides or {}).items():
        cur = values
        keys = k.split(".")
        for part in keys[:-1]:
            cur = cur[part]
        cur[keys[-1]] = v
    ctx = {"Values": values, "Release": {"Name": release}, "Chart": {"Name": chart["name"]}}
    return [(p.name, render_text(p.read_text(), ctx))
            for p in sorted((chart_dir / "templates").glob("*.yaml"))]
