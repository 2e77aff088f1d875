"""Drives `warden serve`'s A2A server with the official Python client (a2a-sdk 1.x, protocol 1.0).

Usage: client_flow.py BASE_URL TOKEN SKILL_NAME

Runs, in order (the server runs one task at a time and its scripted model answers them in this
order): the agent card; SendMessage then GetTask polled to COMPLETED; SendStreamingMessage read
to its final state; an approval that surfaces as INPUT_REQUIRED and resumes after a second
message; SubscribeToTask while CancelTask cancels; ListTasks with filters and pages; malformed
requests and the errors they get. Each step checks what it saw (an AssertionError fails the
run) and prints one line `STEP <name> <json>` for the Rust test to check further.
"""

import asyncio
import json
import sys
import uuid

import httpx
from a2a.client import A2ACardResolver, ClientConfig, ClientFactory
from a2a.types import (
    CancelTaskRequest,
    GetTaskRequest,
    InvalidParamsError,
    ListTasksRequest,
    Message,
    Part,
    PushNotificationNotSupportedError,
    Role,
    SendMessageRequest,
    SubscribeToTaskRequest,
    TaskNotCancelableError,
    TaskNotFoundError,
    TaskPushNotificationConfig,
    TaskState,
)
from google.protobuf import json_format

BASE, TOKEN, SKILL = sys.argv[1], sys.argv[2], sys.argv[3]
TIMEOUT = 240.0


def report(step, data):
    print(f"STEP {step} {json.dumps(data, sort_keys=True)}", flush=True)


def state(task):
    return TaskState.Name(task.status.state)


def text_parts(parts):
    return [p.text for p in parts if p.HasField("text")]


def message(text, task_id=None, context_id=None):
    m = Message(message_id=str(uuid.uuid4()), role=Role.ROLE_USER, parts=[Part(text=text)])
    if task_id:
        m.task_id = task_id
    if context_id:
        m.context_id = context_id
    return m


def http():
    return httpx.AsyncClient(
        headers={"Authorization": f"Bearer {TOKEN}"}, timeout=httpx.Timeout(TIMEOUT)
    )


async def client(card, *, streaming, polling):
    cfg = ClientConfig(httpx_client=http(), streaming=streaming, polling=polling)
    return ClientFactory(cfg).create(card)


async def first_task(stream):
    async for ev in stream:
        assert ev.HasField("task"), ev
        return ev.task
    raise AssertionError("no answer")


async def wait_state(c, task_id, want, seconds=180):
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while True:
        t = await c.get_task(GetTaskRequest(id=task_id))
        if state(t) in want:
            return t
        assert loop.time() < end, f"{task_id} stuck in {state(t)}, wanted {want}"
        await asyncio.sleep(0.3)


async def main():
    async with httpx.AsyncClient(timeout=30) as anon:
        card = await A2ACardResolver(anon, BASE).get_agent_card()
    assert card.name == "warden-a2a-test", card.name
    iface = card.supported_interfaces[0]
    assert iface.protocol_binding == "JSONRPC" and iface.protocol_version == "1.0", iface
    assert iface.url == f"{BASE}/a2a", iface.url
    assert card.capabilities.streaming and not card.capabilities.push_notifications
    skills = [s.id for s in card.skills]
    assert SKILL in skills, skills
    assert card.security_schemes["bearer"].http_auth_security_scheme.scheme == "Bearer"
    report("card", {"skills": skills, "url": iface.url})

    # SendMessage (returning at once), then GetTask until it completes.
    poller = await client(card, streaming=False, polling=True)
    t = await first_task(poller.send_message(SendMessageRequest(message=message("Say A"))))
    assert state(t) in ("TASK_STATE_SUBMITTED", "TASK_STATE_WORKING"), state(t)
    done = await wait_state(poller, t.id, ["TASK_STATE_COMPLETED", "TASK_STATE_FAILED"])
    assert state(done) == "TASK_STATE_COMPLETED", done
    result = text_parts(done.artifacts[0].parts)
    assert len(result) == 1 and result[0].endswith("Summary A."), result
    assert text_parts(done.history[0].parts) == ["Say A"], done.history
    report("poll", {"id": t.id, "context": t.context_id, "result": result})

    # SendStreamingMessage: events until the final state.
    streamer = await client(card, streaming=True, polling=False)
    events = []
    async for ev in streamer.send_message(SendMessageRequest(message=message("Say B"))):
        kind = ev.WhichOneof("payload")
        if kind == "task":
            events.append(["task", state(ev.task)])
            stream_id = ev.task.id
        elif kind == "status_update":
            events.append(["status", TaskState.Name(ev.status_update.status.state)])
        elif kind == "artifact_update":
            events.append(["artifact", text_parts(ev.artifact_update.artifact.parts)])
    assert events[0][0] == "task", events
    assert events[-1] == ["status", "TASK_STATE_COMPLETED"], events
    assert any(k == "artifact" and v[0].endswith("Summary B.") for k, v in events), events
    report("stream", {"id": stream_id, "events": events})

    # An approval: the blocking SendMessage answers INPUT_REQUIRED, naming the call; the next
    # message on the task approves it and the task completes.
    blocking = await client(card, streaming=False, polling=False)
    t = await first_task(blocking.send_message(SendMessageRequest(message=message("Touch it"))))
    assert state(t) == "TASK_STATE_INPUT_REQUIRED", t
    asked = " ".join(text_parts(t.status.message.parts))
    assert "touch approved.txt" in asked, asked
    t2 = await first_task(
        blocking.send_message(
            SendMessageRequest(message=message("approve", task_id=t.id, context_id=t.context_id))
        )
    )
    assert t2.id == t.id
    assert state(t2) == "TASK_STATE_COMPLETED", t2
    assert [text_parts(m.parts) for m in t2.history] == [["Touch it"], ["approve"]], t2.history
    report("approval", {"id": t.id, "asked": asked, "final": state(t2)})

    # SubscribeToTask while the task runs; CancelTask ends it and the stream says so.
    t = await first_task(poller.send_message(SendMessageRequest(message=message("Hang"))))
    await wait_state(poller, t.id, ["TASK_STATE_WORKING"])
    seen = []
    first = asyncio.Event()

    async def follow():
        async for ev in streamer.subscribe(SubscribeToTaskRequest(id=t.id)):
            kind = ev.WhichOneof("payload")
            if kind == "task":
                seen.append(state(ev.task))
                first.set()
            elif kind == "status_update":
                seen.append(TaskState.Name(ev.status_update.status.state))

    follower = asyncio.create_task(follow())
    await asyncio.wait_for(first.wait(), 30)
    canceled = await poller.cancel_task(CancelTaskRequest(id=t.id))
    assert state(canceled) == "TASK_STATE_CANCELED", canceled
    await asyncio.wait_for(follower, 60)
    assert seen[0] == "TASK_STATE_WORKING" and seen[-1] == "TASK_STATE_CANCELED", seen
    report("cancel", {"id": t.id, "seen": seen})
    try:
        await poller.cancel_task(CancelTaskRequest(id=t.id))
        raise AssertionError("a canceled task was canceled again")
    except TaskNotCancelableError:
        pass

    # ListTasks: every task, by state, by context, in pages.
    listed = await poller.list_tasks(ListTasksRequest())
    assert listed.total_size == 4, listed
    completed = await poller.list_tasks(ListTasksRequest(status=TaskState.TASK_STATE_COMPLETED))
    assert completed.total_size == 3, completed
    one_ctx = await poller.list_tasks(ListTasksRequest(context_id=t.context_id))
    assert [x.id for x in one_ctx.tasks] == [t.id], one_ctx
    ids, token = [], ""
    while True:
        page = await poller.list_tasks(ListTasksRequest(page_size=3, page_token=token))
        ids += [x.id for x in page.tasks]
        token = page.next_page_token
        if not token:
            break
    assert ids == [x.id for x in listed.tasks], (ids, listed)
    report("list", {"total": listed.total_size, "ids": ids})

    # Bad input: the right errors, and no task started by any of it.
    errors = {}
    try:
        await poller.get_task(GetTaskRequest(id="task-doesnotexist"))
    except TaskNotFoundError as e:
        errors["unknown_task"] = str(e)
    try:
        await first_task(poller.send_message(SendMessageRequest(message=Message(
            message_id=str(uuid.uuid4()), role=Role.ROLE_USER, parts=[]))))
    except InvalidParamsError as e:
        errors["no_text"] = str(e)
    bad = Message(message_id=str(uuid.uuid4()), role=Role.ROLE_USER, parts=[Part(text="x")])
    json_format.ParseDict({"repo": "ssh://nowhere/x.git"}, bad.metadata)
    try:
        await first_task(poller.send_message(SendMessageRequest(message=bad)))
    except InvalidParamsError as e:
        errors["bad_repo"] = str(e)
    try:
        await poller.create_task_push_notification_config(
            TaskPushNotificationConfig(task_id=t.id, url="https://example.invalid/hook"))
    except PushNotificationNotSupportedError as e:
        errors["push"] = str(e)
    async with http() as raw:
        for name, body in [
            ("parse", "{not json"),
            ("method", json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tasks/get"})),
            ("request", json.dumps({"jsonrpc": "1.0", "id": 1, "method": "GetTask"})),
            ("params", json.dumps({"jsonrpc": "2.0", "id": 1, "method": "GetTask",
                                   "params": {"id": 5}})),
        ]:
            r = await raw.post(f"{BASE}/a2a", content=body,
                               headers={"content-type": "application/json"})
            assert r.status_code == 200, r.text
            errors[name] = r.json()["error"]["code"]
    after = await poller.list_tasks(ListTasksRequest())
    assert after.total_size == 4, after
    report("errors", errors)
    print("ALL OK", flush=True)


asyncio.run(main())
