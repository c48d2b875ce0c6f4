"""A minimal Codex backend over the Responses WebSocket, served by the `websockets` library
(an independent permessage-deflate implementation) for tests/upstream_ws.rs.

It listens on 127.0.0.1 at a free port, prints the port on its first line of stdout, and
serves `GET /backend-api/codex/responses` with permessage-deflate (websockets negotiates it
when the client offers it, and then compresses what it sends). For each `response.create`
it answers response.created, an output_text delta, output_item.done and response.completed
as text frames. The answer's text is a JSON object with what the peer saw: the handshake's
offered and accepted extensions, how many data frames arrived compressed (RSV1) or plain,
and the last user text of the request.
"""

import asyncio
import json
import sys

from websockets.asyncio.server import serve
from websockets.extensions import permessage_deflate as pmd
from websockets.frames import Opcode

SEEN = {"compressed": 0, "plain": 0}

_decode = pmd.PerMessageDeflate.decode


def _counting_decode(self, frame, *, max_size=None):
    if frame.opcode in (Opcode.TEXT, Opcode.BINARY):
        SEEN["compressed" if frame.rsv1 else "plain"] += 1
    return _decode(self, frame, max_size=max_size)


pmd.PerMessageDeflate.decode = _counting_decode


def last_user_text(req):
    for item in reversed(req.get("input") or []):
        if item.get("role") == "user":
            content = item.get("content")
            if isinstance(content, str):
                return content
            for part in content or []:
                if part.get("type") in ("input_text", "text"):
                    return part.get("text")
    return None


async def handler(ws):
    offered = ws.request.headers.get("Sec-WebSocket-Extensions")
    accepted = ws.response.headers.get("Sec-WebSocket-Extensions")
    n = 0
    async for message in ws:
        if not isinstance(message, str):
            await ws.close(1003, "binary frames are not supported")
            return
        req = json.loads(message)
        if req.get("type") != "response.create":
            continue
        n += 1
        rid = f"resp_peer{n}"
        model = req.get("model", "gpt-5")
        text = json.dumps(
            {
                "offered": offered,
                "accepted": accepted,
                "compressed_frames": SEEN["compressed"],
                "plain_frames": SEEN["plain"],
                "said": last_user_text(req),
                # Enough text that the answer's frames are worth compressing.
                "padding": "deflate " * 40,
            },
            sort_keys=True,
        )
        item = {
            "id": f"msg_peer{n}",
            "type": "message",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "annotations": [], "text": text}],
        }
        response = {
            "id": rid,
            "object": "response",
            "status": "in_progress",
            "model": model,
            "output": [],
            "usage": None,
        }
        await ws.send(json.dumps({"type": "response.created", "response": response}))
        await ws.send(
            json.dumps(
                {
                    "type": "response.output_item.added",
                    "output_index": 0,
                    "item": dict(item, status="in_progress", content=[]),
                }
            )
        )
        await ws.send(
            json.dumps(
                {
                    "type": "response.output_text.delta",
                    "item_id": item["id"],
                    "output_index": 0,
                    "content_index": 0,
                    "delta": text,
                }
            )
        )
        await ws.send(
            json.dumps({"type": "response.output_item.done", "output_index": 0, "item": item})
        )
        done = dict(
            response,
            status="completed",
            output=[item],
            usage={
                "input_tokens": 10,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": 5,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": 15,
            },
        )
        await ws.send(json.dumps({"type": "response.completed", "response": done}))


async def main():
    async with serve(handler, "127.0.0.1", 0, max_size=64 * 1024 * 1024) as server:
        port = server.sockets[0].getsockname()[1]
        print(port, flush=True)
        # Ends when the test closes stdin (or kills it).
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


if __name__ == "__main__":
    asyncio.run(main())
