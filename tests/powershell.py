"""Just enough PowerShell to run the docs' PowerShell examples without pwsh.

The docs give every curl a twin for Windows PowerShell 5.1 and 7, written in a small subset
(docs/README.md, "How these docs are written"): here-strings, string variables,
`$env:` assignments, `Invoke-RestMethod` with -Method, -Uri, -ContentType, -Body and
-Headers, member access on its reply, `curl.exe`, and `[IO.File]::WriteAllText`. This module
reads that subset and does what PowerShell would: it sends the same requests. A line outside
the subset is an error, so a twin cannot drift into syntax nothing checks.
"""

import json
import os
import re
import subprocess
import urllib.error
import urllib.request
from pathlib import Path


class PowerShellError(Exception):
    """A statement outside the subset, or a request PowerShell would have thrown on."""


def statements(text: str) -> list[str]:
    """Lines joined at backtick continuations; a literal here-string stays one statement."""
    out, lines = [], text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        opening = re.match(r"^\$[\w:]+\s*=\s*@(['\"])$", line)
        if opening:
            end = lines.index(opening[1] + "@", i + 1)   # the closing '@ starts its own line
            out.append("\n".join(lines[i:end + 1]))
            i = end + 1
            continue
        while line.endswith("`") and i + 1 < len(lines):
            i += 1
            line = line[:-1] + " " + lines[i].strip()
        if line.strip() and not line.lstrip().startswith("#"):
            out.append(line.strip())
        i += 1
    return out


class Session:
    """One PowerShell session: variables carry from statement to statement."""

    def __init__(self, cwd: Path, allow_errors: bool = False) -> None:
        self.cwd = cwd
        self.vars: dict[str, object] = {"PWD": str(cwd)}
        self.env: dict[str, str] = {}
        self.allow_errors = allow_errors
        self.requests: list[tuple[str, str]] = []      # (method, url) of each one sent

    def run(self, text: str) -> None:
        for statement in statements(text):
            self.execute(statement)

    def execute(self, statement: str) -> object:
        here = re.match(r"^\$(\w+)\s*=\s*@(['\"])\n(.*)\n\2@$", statement, re.S)
        if here:       # @' '@ is literal; @" "@ expands $variables, as a "string" does
            self.vars[here[1]] = here[3] if here[2] == "'" else self.expand(here[3], quotes=False)
            return None
        env = re.match(r"^\$env:(\w+)\s*=\s*(.+)$", statement)
        if env:
            self.env[env[1]] = str(self.value(env[2]))
            return None
        assign = re.match(r"^\$(\w+)\s*=\s*(.+)$", statement)
        if assign:
            self.vars[assign[1]] = self.value(assign[2])
            return None
        return self.value(statement)

    # --- expressions ---------------------------------------------------------------------

    def value(self, expression: str) -> object:
        expression = expression.strip()
        member = re.match(r"^\((.+)\)((?:\.\w+)+)$", expression)
        if member and member[1].startswith(("Invoke-RestMethod", "irm ")):
            return self.members(self.command(member[1]), member[2])
        if expression.startswith(("Invoke-RestMethod", "curl.exe", "[IO.File]::")):
            return self.command(expression)
        tokens = self.tokens(expression)
        if len(tokens) != 1:
            raise PowerShellError(f"not in the docs' subset: {expression!r}")
        return self.token_value(tokens[0])

    def members(self, value: object, chain: str) -> object:
        for name in chain.strip(".").split("."):
            value = self.member(value, name)
        return value

    def member(self, value: object, name: str) -> object:
        if isinstance(value, list):      # member enumeration: each item's, one alone unwrapped
            found = [self.member(item, name) for item in value]
            return found[0] if len(found) == 1 else found
        if not isinstance(value, dict) or name not in value:
            raise PowerShellError(f"the reply has no .{name}: {value!r:.200}")
        return value[name]

    def token_value(self, token: str) -> object:
        if token.startswith("'"):
            return token[1:-1].replace("''", "'")
        if token.startswith('"'):
            return self.expand(token[1:-1])
        if token.startswith("@{"):
            return self.hashtable(token[2:-1])
        if token.startswith("(") and token.endswith(")"):
            return self.paren(token[1:-1])
        if token.startswith("$"):
            name, _, chain = token[1:].partition(".")
            if name.startswith("env:"):
                return self.env.get(name[4:], os.environ.get(name[4:], ""))
            if name not in self.vars:
                raise PowerShellError(f"${name} is not set")
            return self.members(self.vars[name], chain) if chain else self.vars[name]
        return self.expand(token, quotes=False)        # a bare word: a URL, a flag, a name

    def paren(self, inner: str) -> object:
        utf8 = re.match(r"^\[Text\.Encoding\]::UTF8\.GetBytes\((\$\w+)\)$", inner.strip())
        if utf8:
            return str(self.token_value(utf8[1])).encode("utf-8")
        return self.value(inner)

    def expand(self, text: str, quotes: bool = True) -> str:
        """A double-quoted string (or a bare word, or an @" "@ here-string): $name,
        $name.member inside $( ), and backtick escapes."""
        def sub(match: re.Match) -> str:
            inner = match[1] or match[2]
            return str(self.token_value("$" + inner))
        text = re.sub(r"\$\(\$([\w.:]+)\)|\$([\w:]+)", sub, text)
        text = text.replace("`n", "\n").replace("``", "`")
        return text.replace('`"', '"').replace('""', '"') if quotes else text

    def hashtable(self, body: str) -> dict:
        table = {}
        for pair in re.split(r";|\n", body):
            if not pair.strip():
                continue
            key, _, raw = pair.partition("=")
            key = key.strip().strip("'\"")
            table[key] = self.value(raw)
        return table

    @staticmethod
    def tokens(text: str) -> list[str]:
        """Split on spaces, keeping quoted strings, (…) and @{…} whole."""
        out, i = [], 0
        while i < len(text):
            if text[i].isspace():
                i += 1
                continue
            start = i
            if text[i] == "'":
                i += 1
                while i < len(text) and not (text[i] == "'" and text[i + 1:i + 2] != "'"):
                    i += 2 if text[i:i + 2] == "''" else 1
                i += 1
            elif text[i] == '"':
                i += 1
                while i < len(text) and text[i] != '"':
                    i += 2 if text[i] == "`" else 1
                i += 1
            elif text[i] in "(@":
                opening = "(" if text[i] == "(" else "{"
                closing = ")" if opening == "(" else "}"
                depth, i = 0, i + (0 if opening == "(" else 1)
                while i < len(text):
                    depth += (text[i] == opening) - (text[i] == closing)
                    i += 1
                    if depth == 0:
                        break
            else:
                while i < len(text) and not text[i].isspace():
                    i += 1
            out.append(text[start:i])
        return out

    # --- commands ------------------------------------------------------------------------

    def command(self, text: str) -> object:
        if text.startswith("[IO.File]::WriteAllText("):
            path, content = (s.strip() for s in text[len("[IO.File]::WriteAllText("):-1]
                             .split(",", 1))
            target = Path(str(self.value(path)).replace("\\", "/"))
            target.write_bytes(str(self.value(content)).encode("utf-8"))   # no BOM, as .NET
            return None
        tokens = self.tokens(text)
        if tokens[0] == "curl.exe":
            return self.curl([str(self.token_value(t)) for t in tokens[1:]])
        if tokens[0] in ("Invoke-RestMethod", "irm"):
            return self.invoke(tokens[1:])
        raise PowerShellError(f"not in the docs' subset: {text!r}")

    def invoke(self, tokens: list[str]) -> object:
        params, positional = {}, []
        i = 0
        while i < len(tokens):
            if tokens[i].startswith("-") and i + 1 < len(tokens):
                params[tokens[i][1:].lower()] = self.token_value(tokens[i + 1])
                i += 2
            else:
                positional.append(self.token_value(tokens[i]))
                i += 1
        unknown = set(params) - {"uri", "method", "contenttype", "body", "headers"}
        if unknown:
            raise PowerShellError(f"Invoke-RestMethod parameters outside the subset: {unknown}")
        url = str(params.get("uri") or positional[0])
        method = str(params.get("method", "Get")).upper()
        body = params.get("body")
        if isinstance(body, str):
            body = body.encode("latin-1")      # what 5.1 does to a string body: ASCII only
        headers = {str(k): str(v) for k, v in dict(params.get("headers") or {}).items()}
        if "contenttype" in params:
            headers["Content-Type"] = str(params["contenttype"])
        self.requests.append((method, url))
        request = urllib.request.Request(url, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as reply:
                raw, kind = reply.read(), reply.headers.get("Content-Type", "")
        except urllib.error.HTTPError as error:
            if not self.allow_errors:
                raise PowerShellError(f"{method} {url} answered {error.code}: "
                                      f"{error.read()[:300]!r}") from None
            raw, kind = error.read(), error.headers.get("Content-Type", "")
        text = raw.decode("utf-8")
        media = kind.split(";")[0].strip().lower()      # x-ndjson stays text, as in pwsh
        is_json = media in ("application/json", "text/json") or media.endswith("+json")
        return json.loads(text) if is_json and text.strip() else text

    def curl(self, args: list[str]) -> str:
        flags = ["-sS"] if self.allow_errors else ["-sS", "--fail-with-body"]
        done = subprocess.run(["curl", *flags, *args], cwd=self.cwd, capture_output=True,
                              timeout=60, env={**os.environ, **self.env})
        if done.returncode:
            raise PowerShellError(f"curl.exe {' '.join(args)} failed ({done.returncode}): "
                                  f"{done.stdout[:300]!r} {done.stderr[:300]!r}")
        self.requests.append(("CURL", " ".join(args)))
        return done.stdout.decode("utf-8")
