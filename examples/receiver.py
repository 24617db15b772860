"""A small webhook receiver: what a client of this service runs on its side.

It checks the `x-webhook-infermedica-token` header, verifies the Standard Webhooks
signature (which also rejects timestamps more than five minutes away), and drops
duplicates by `webhook-id` (delivery is at least once: a retry may repeat an event).

    WEBHOOK_TOKEN=... WEBHOOK_SECRET=whsec_... python examples/receiver.py   # port 8001
"""

from __future__ import annotations

import hmac
import json
import os
from collections import OrderedDict

import uvicorn
from standardwebhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

SEEN_LIMIT = 10_000


def create_receiver(*, token: str, secret: str) -> Starlette:
    webhook = Webhook(secret)
    seen: OrderedDict[str, None] = OrderedDict()

    async def receive(request: Request) -> JSONResponse:
        given = request.headers.get("x-webhook-infermedica-token", "")
        if not hmac.compare_digest(given.encode(), token.encode()):
            return JSONResponse({"error": "bad token"}, status_code=401)
        body = await request.body()
        try:
            event = webhook.verify(body, dict(request.headers))
        except WebhookVerificationError:
            return JSONResponse({"error": "bad signature or stale timestamp"}, status_code=400)
        webhook_id = request.headers["webhook-id"]
        if webhook_id in seen:
            return JSONResponse({"status": "duplicate ignored"})
        seen[webhook_id] = None
        if len(seen) > SEEN_LIMIT:
            seen.popitem(last=False)
        print(f"verified {event['event_type']} {webhook_id}: {json.dumps(event['content'])}")
        return JSONResponse({"status": "ok"})

    return Starlette(routes=[Route("/webhook", receive, methods=["POST"])])


if __name__ == "__main__":
    app = create_receiver(token=os.environ["WEBHOOK_TOKEN"], secret=os.environ["WEBHOOK_SECRET"])
    port = int(os.environ.get("RECEIVER_PORT", "8001"))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
