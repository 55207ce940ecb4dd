"""The message catalogue: the AsyncAPI document generated from the code, and its HTML page;
beside it, the HTTP gateway's OpenAPI document, generated from the code too.

CLI::

    python -m devtools.catalogue gen             # (re)write docs/asyncapi.json, docs/openapi.json
    python -m devtools.catalogue html -o x.html  # the page, from the committed document
    python -m devtools.catalogue serve --port 8000

The page is plain HTML and CSS rendered here from the committed document, with no
JavaScript and nothing fetched from elsewhere, so it works offline (`faststream docs serve`
loads the AsyncAPI React component from a CDN).
"""

from __future__ import annotations

import argparse
import contextlib
import html
import json
import re
import sys
from http import server
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from service.app import Worker, catalogue
from service.config import Settings
from service.gateway.app import create_app
from service.metrics import ServiceMetrics
from service.topology import ROUTING_KEYS
from service.worker.asyncapi_docs import EVENTS, REPLY_TO

DOCUMENT = Path(__file__).resolve().parent.parent / "docs" / "asyncapi.json"
OPENAPI_DOCUMENT = DOCUMENT.with_name("openapi.json")

NEUTRAL_AMQP_URL = "amqp://rabbitmq:5672/"
"""The server the document names: no credentials, not this machine's broker."""

Json = dict[str, Any]


def document() -> Json:
    """The AsyncAPI document of the worker with the default settings, whatever the
    environment says (`model_validate` reads no ORDERS_* variables). Nothing connects."""
    settings = Settings.model_validate({"amqp_url": NEUTRAL_AMQP_URL})
    worker = Worker(settings, ServiceMetrics(CollectorRegistry()))
    spec = catalogue(worker).to_specification()
    return json.loads(dumps(spec.to_jsonable()))  # type: ignore[no-any-return]


def openapi_document() -> Json:
    """The HTTP gateway's OpenAPI document with the default settings, whatever the
    environment says, as `/openapi.json` serves it. The app is built, never started: nothing
    connects."""
    settings = Settings.model_validate({"amqp_url": NEUTRAL_AMQP_URL})
    return json.loads(dumps(create_app(settings).openapi()))  # type: ignore[no-any-return]


def dumps(doc: Any) -> str:
    """Stable text: sorted keys, two-space indent, a final newline."""
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


# --- the page ---------------------------------------------------------------------------

_CSS = """
body { font: 15px/1.5 system-ui, sans-serif; margin: 0 auto; max-width: 70rem; padding: 1rem 2rem;
  color: #1d232a; }
h1 { margin-bottom: 0; } h2 { border-bottom: 2px solid #d0d7de; margin-top: 2.5rem; }
h3 { margin: 2rem 0 .3rem; } h3 code { font-size: 1.1em; }
nav ul { columns: 2; } nav li { margin: .1rem 0; }
code, pre { font-family: ui-monospace, monospace; font-size: 13px; }
pre { background: #f6f8fa; border: 1px solid #d0d7de; padding: .6rem; overflow-x: auto; }
table { border-collapse: collapse; width: 100%; margin: .5rem 0; }
th, td { border: 1px solid #d0d7de; padding: .25rem .5rem; text-align: left; vertical-align: top; }
th { background: #f6f8fa; } td.example code { white-space: pre-wrap; word-break: break-all; }
.tag { display: inline-block; border-radius: 4px; padding: 0 .4rem; font-size: 12px;
  color: #fff; background: #0969da; } .tag.send { background: #1a7f37; }
.meta { color: #57606a; } .required { color: #cf222e; font-weight: 600; }
"""


def render(doc: Json) -> str:
    """The catalogue page: servers, one section per operation, then every schema."""
    info = doc.get("info", {})
    title = _e(info.get("title", "AsyncAPI"))
    operations = sorted(doc.get("operations", {}).items(), key=lambda kv: _order(doc, *kv))
    schemas = doc.get("components", {}).get("schemas", {})
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{title} — message catalogue</title><style>{_CSS}</style></head><body>",
        f"<h1>{title} <small class=meta>{_e(info.get('version', ''))}</small></h1>",
        f"<p class=meta>AsyncAPI {_e(doc.get('asyncapi', ''))}, default content type "
        f"<code>{_e(doc.get('defaultContentType', ''))}</code></p>",
        f"<p>{_text(info.get('description', ''))}</p>",
        _servers(doc.get("servers", {})),
        "<nav><h2>Operations</h2><ul>",
        *(
            f'<li><span class="tag {_e(op["action"])}">{_e(op["action"])}</span> '
            f'<a href="#op-{_e(name)}"><code>{_e(_address(doc, op))}</code></a></li>'
            for name, op in operations
        ),
        "</ul></nav>",
        "<h2>Channels and messages</h2>",
        *(_operation(doc, name, op) for name, op in operations),
        "<h2>Schemas</h2>",
        *(_schema_section(doc, name, schema) for name, schema in sorted(schemas.items())),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _text(value: object) -> str:
    """Escaped prose with its `code` spans set as code."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", _e(value))


def _resolve(doc: Json, node: Json) -> Json:
    """Follow a local `$ref` (`#/components/messages/x`) to what it names."""
    while "$ref" in node:
        target: Any = doc
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        node = target
    return node


_CONTRACT_ORDER = (*ROUTING_KEYS, *(routing_key for routing_key, _, _ in EVENTS), REPLY_TO)


def _order(doc: Json, name: str, operation: Json) -> tuple[bool, int, str]:
    """What the worker receives, then what it sends, each in the contract's order."""
    address = _address(doc, operation)
    rank = _CONTRACT_ORDER.index(address) if address in _CONTRACT_ORDER else len(_CONTRACT_ORDER)
    return operation.get("action") != "receive", rank, name


def _address(doc: Json, operation: Json) -> str:
    channel = _resolve(doc, operation["channel"])
    return str(channel.get("address") or "")


def _servers(servers: Json) -> str:
    rows = "".join(
        f"<tr><td>{_e(name)}</td><td><code>{_e(s.get('protocol'))}://{_e(s.get('host'))}"
        f"{_e(s.get('pathname', ''))}</code></td><td>{_e(s.get('protocolVersion', ''))}</td></tr>"
        for name, s in sorted(servers.items())
    )
    return (
        "<h2>Servers</h2><table><tr><th>name</th><th>url</th><th>protocol version</th></tr>"
        f"{rows}</table>"
    )


def _operation(doc: Json, name: str, operation: Json) -> str:
    channel = _resolve(doc, operation["channel"])
    amqp = channel.get("bindings", {}).get("amqp", {})
    action = operation.get("action", "")
    lines = [
        f'<section id="op-{_e(name)}">',
        f'<h3><span class="tag {_e(action)}">{_e(action)}</span> '
        f"<code>{_e(channel.get('address', ''))}</code></h3>",
        f"<p>{_text(operation.get('description') or channel.get('description') or '')}</p>",
        _binding(amqp, operation),
    ]
    for ref in operation.get("messages", []):
        message = _resolve(doc, _resolve(doc, ref))
        payload = message.get("payload", {})
        lines += [
            f"<p><b>Message</b> <code>{_e(message.get('title') or message.get('name', ''))}"
            f"</code>, payload {_type(payload)}</p>",
            _fields(_resolve(doc, payload), doc),
            "<p><b>Example</b></p>",
            f"<pre>{_e(json.dumps(example(doc, payload), indent=2, ensure_ascii=False))}</pre>",
        ]
    lines.append("</section>")
    return "\n".join(lines)


def _binding(amqp: Json, operation: Json) -> str:
    """Where the message goes: the exchange of a sent message, the queue of a received one
    (an AMQP queue binding names no exchange), and the routing key."""
    rows = []
    if "exchange" in amqp:
        exchange = amqp["exchange"]
        rows.append(("exchange", exchange.get("name") or "(default)", exchange.get("type", "")))
    if "queue" in amqp:
        queue = amqp["queue"]
        rows.append(("queue", queue.get("name", ""), "durable" if queue.get("durable") else ""))
    keys = operation.get("bindings", {}).get("amqp", {}).get("cc", [])
    rows.extend(("routing key", key, "") for key in keys)
    cells = "".join(
        f"<tr><th>{_e(k)}</th><td><code>{_e(v)}</code> <span class=meta>{_e(m)}</span></td></tr>"
        for k, v, m in rows
    )
    return f"<table>{cells}</table>"


def _type(schema: Json) -> str:  # noqa: PLR0911 - one return per kind of schema
    """A short, linked type: `PlaceOrder`, `array of OrderItem`, `string | null`."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f'<a href="#schema-{_e(name)}"><code>{_e(name)}</code></a>'
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            return " | ".join(_type(s) for s in schema[key])
    if "const" in schema:
        return f"<code>{_e(json.dumps(schema['const']))}</code>"
    if "enum" in schema:
        return "one of " + ", ".join(f"<code>{_e(json.dumps(v))}</code>" for v in schema["enum"])
    kind = schema.get("type", "any")
    if kind == "array":
        return "array of " + _type(schema.get("items", {}))
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        return "object of " + _type(schema["additionalProperties"])
    fmt = f" ({schema['format']})" if "format" in schema else ""
    return f"<code>{_e(kind)}</code>{_e(fmt)}"


def _fields(schema: Json, doc: Json) -> str:
    properties = schema.get("properties")
    if properties is None:
        alternatives = schema.get("oneOf") or schema.get("anyOf")
        if alternatives:
            return "<p>One of: " + ", ".join(_type(s) for s in alternatives) + "</p>"
        return ""
    if not properties:
        return "<p class=meta>No fields: the body is <code>{}</code>.</p>"
    required = set(schema.get("required", []))
    rows = "".join(
        f"<tr><td><code>{_e(name)}</code>"
        + (" <span class=required>required</span>" if name in required else "")
        + f"</td><td>{_type(prop)}</td><td>{_text(prop.get('description', ''))}</td>"
        f"<td class=example><code>{_e(_first_example(doc, prop))}</code></td></tr>"
        for name, prop in properties.items()
    )
    return (
        "<table><tr><th>field</th><th>type</th><th>description</th><th>example</th></tr>"
        f"{rows}</table>"
    )


def _first_example(doc: Json, schema: Json) -> str:
    examples = schema.get("examples")
    if examples:
        return json.dumps(examples[0], ensure_ascii=False)
    return json.dumps(example(doc, schema), ensure_ascii=False)


def example(doc: Json, schema: Json, depth: int = 0) -> Any:  # noqa: PLR0911
    """An example body: each field's first example, or one built from its schema."""
    if schema.get("examples"):
        return schema["examples"][0]
    if depth > 8:  # a recursion guard
        return None
    schema_ = _resolve(doc, schema)
    if schema_.get("examples"):
        return schema_["examples"][0]
    for key in ("oneOf", "anyOf"):
        if key in schema_:
            return example(doc, schema_[key][0], depth + 1)
    if "properties" in schema_:
        return {k: example(doc, v, depth + 1) for k, v in schema_["properties"].items()}
    if "enum" in schema_:
        return schema_["enum"][0]
    return schema_.get("const", schema_.get("default"))


def _schema_section(doc: Json, name: str, schema: Json) -> str:
    if "enum" in schema:
        body = "<p>One of: " + ", ".join(f"<code>{_e(v)}</code>" for v in schema["enum"]) + "</p>"
    else:
        body = _fields(schema, doc)
    return (
        f'<section id="schema-{_e(name)}"><h3><code>{_e(name)}</code></h3>'
        f"<p>{_text(schema.get('description', ''))}</p>{body}</section>"
    )


# --- CLI ----------------------------------------------------------------------------------


class _Page(server.BaseHTTPRequestHandler):
    page = b""
    raw = b""
    openapi = b""

    def do_GET(self) -> None:
        if self.path.startswith("/asyncapi.json"):
            body, kind = self.raw, "application/json"
        elif self.path.startswith("/openapi.json"):
            body, kind = self.openapi, "application/json"
        else:
            body, kind = self.page, "text/html; charset=utf-8"
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.catalogue")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "gen", help=f"write {DOCUMENT.name} and {OPENAPI_DOCUMENT.name} from the code"
    )
    page = commands.add_parser("html", help="render the committed document as HTML")
    page.add_argument("-o", "--out", type=Path, required=True)
    serve = commands.add_parser("serve", help="serve the page of the committed document")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)

    if args.command == "gen":
        for path, generated in ((DOCUMENT, document()), (OPENAPI_DOCUMENT, openapi_document())):
            path.write_text(dumps(generated), encoding="utf-8")
            print(f"wrote {path}")
        return 0
    committed = json.loads(DOCUMENT.read_text(encoding="utf-8"))
    if args.command == "html":
        args.out.write_text(render(committed), encoding="utf-8")
        return 0
    _Page.page = render(committed).encode()
    _Page.raw = DOCUMENT.read_bytes()
    _Page.openapi = OPENAPI_DOCUMENT.read_bytes()
    print(f"message catalogue on http://{args.host}:{args.port}/ (Ctrl-C stops it)")
    print(f"HTTP API (OpenAPI) document on http://{args.host}:{args.port}/{OPENAPI_DOCUMENT.name}")
    with (
        server.ThreadingHTTPServer((args.host, args.port), _Page) as httpd,
        contextlib.suppress(KeyboardInterrupt),
    ):
        httpd.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
