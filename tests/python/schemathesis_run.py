"""Property-based test of the gateway's REST surface against its own OpenAPI document.

Usage:
    schemathesis_run.py SPEC_URL --max-examples N [--exclude-tag TAG ...] [--seed S]

Runs `schemathesis run` in this process, so the NDJSON serializer, deserializer and
hook registered below apply to it. Exits with schemathesis's own code: 0 only when it
reports neither failures nor errors.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
from typing import Any

import schemathesis
from schemathesis.cli import schemathesis as schemathesis_cli
from schemathesis.core.transport import Response

NDJSON = "application/x-ndjson"

# Exactly these checks: the gateway must not answer 5xx, and whatever it answers must be
# documented (status, media type, body). Other checks (e.g. negative_data_rejection) judge
# API design choices rather than conformance to the document, so they stay out.
CHECKS = "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance"

# The coverage phase (deterministic boundary and invalid values, undocumented methods) is
# kept: every outcome it provokes is still a documented status, media type and body, and it
# adds about half a minute on the demo.
PHASES = "examples,coverage,fuzzing"

# A server stream has no deadline unless the client sends one (see README, "Deadlines"), and
# the generated inputs readily ask for endless ones (count=2**31, interval_ms=0). schemathesis
# reads an NDJSON body to its end, so each streaming call carries a deadline: the gateway then
# ends the stream with a `{"error": DEADLINE_EXCEEDED}` line, which is itself validated.
STREAM_DEADLINE = "3S"  # grpc-timeout syntax
# A call that stays silent this long is reported as an error instead of stalling the run.
REQUEST_TIMEOUT_SECONDS = "15"
# Last resort should the deadline not be honoured (e.g. a gateway with
# `metadata.honour_client_timeout = false` serving an endless stream): stop the whole run.
RUN_TIME_LIMIT_SECONDS = 300


@schemathesis.serializer(NDJSON)
def serialize_ndjson(ctx: schemathesis.SerializationContext, value: Any) -> bytes:
    """A client-stream body: one request message per line.

    The document describes one line's message, so a generated object is one line. A list
    (which negative testing may generate) is sent as one line per element, i.e. a stream of
    several messages, which is how a client would send them.
    """
    if isinstance(value, bytes):
        return value
    items = value if isinstance(value, list) else [value]
    # json.dumps escapes non-ASCII, so every line is valid UTF-8 whatever strings were
    # generated; `default=str` sends values JSON has no type for (binary data) as text.
    return b"".join(json.dumps(item, default=str).encode() + b"\n" for item in items)


@schemathesis.deserializer(NDJSON)
def deserialize_ndjson(ctx: schemathesis.DeserializationContext, response: Response) -> Any:
    """A server-stream body: one JSON object per line, each described by the response schema.

    schemathesis validates the single value returned here against that schema. To have every
    line checked, the other lines are validated one by one with schemathesis's own response
    validation, and the first line that does not conform is returned, so the report shows it
    in the usual way. When all lines conform, the first one is returned.
    """
    lines = response.content.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the newline that ends the last line
    if not lines:
        # An empty stream carries no message to validate; schemathesis skips validation
        # for bodies it has no deserializer for, which is what NotImplementedError signals.
        raise NotImplementedError("empty stream")
    # A line that is not JSON raises here and is reported as malformed JSON.
    messages = [json.loads(line) for line in lines]
    if len(messages) == 1:
        return messages[0]
    for line, message in zip(lines, messages):
        single = Response(
            status_code=response.status_code,
            headers=response.headers,
            content=line + b"\n",
            request=response.request,
            elapsed=response.elapsed,
            verify=response.verify,
            message=response.message,
            http_version=response.http_version,
            encoding=response.encoding,
        )
        if not ctx.operation.is_valid_response(single):
            return message
    return messages[0]


def _is_server_streaming(operation: schemathesis.APIOperation) -> bool:
    for response in operation.definition.raw.get("responses", {}).values():
        content = response.get("content", {}) if isinstance(response, dict) else {}
        if NDJSON in content or "text/event-stream" in content:
            return True
    return False


@schemathesis.hook
def before_call(context: schemathesis.HookContext, case: schemathesis.Case, kwargs: dict[str, Any]) -> None:
    # Only server streams: a unary call already has the route's deadline, and sending ours
    # there too could turn a slow but correct reply into a 504.
    if _is_server_streaming(case.operation):
        case.headers = {**(case.headers or {}), "grpc-timeout": STREAM_DEADLINE}


def _stop_run() -> None:
    print(f"schemathesis_run: the run exceeded {RUN_TIME_LIMIT_SECONDS} s; stopped", file=sys.stderr, flush=True)
    os._exit(3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spec_url", help="URL of the OpenAPI document; its `servers` give the base URL")
    parser.add_argument("--max-examples", type=int, required=True, help="test cases per operation and phase")
    parser.add_argument("--exclude-tag", action="append", default=[], help="skip operations with this tag")
    parser.add_argument("--seed", type=int, help="random seed, to reproduce a run")
    args = parser.parse_args()

    cli_args = [
        "run",
        args.spec_url,
        "--phases", PHASES,
        "--checks", CHECKS,
        "--max-examples", str(args.max_examples),
        "--request-timeout", REQUEST_TIMEOUT_SECONDS,
        # No example database: a run depends only on its seed, not on what earlier runs found.
        "--generation-database", "none",
        "--no-color",
    ]
    for tag in args.exclude_tag:
        cli_args += ["--exclude-tag", tag]
    if args.seed is not None:
        cli_args += ["--seed", str(args.seed)]

    watchdog = threading.Timer(RUN_TIME_LIMIT_SECONDS, _stop_run)
    watchdog.daemon = True
    watchdog.start()
    with tempfile.TemporaryDirectory() as tmp:
        # Without a config file schemathesis keeps a crash cache in ./.schemathesis, which
        # would replay old failures into the next run and leave files in the work tree.
        config = os.path.join(tmp, "schemathesis.toml")
        with open(config, "w", encoding="utf-8") as f:
            f.write("[cache]\nenabled = false\n")
        # Prints schemathesis's own progress and summary, then exits with its exit code.
        schemathesis_cli.main(args=["--config-file", config, *cli_args], prog_name="schemathesis")


if __name__ == "__main__":
    main()
