"""The corpus server's server-side state, and the API rules that read and change it.

Like the real APIs:

* **Stored Responses** belong to an organisation/project (``OpenAI-Organization``/``OpenAI-Project``):
  a Responses call with ``store`` true (the default) stores its response under its id for that pair;
  ``previous_response_id`` naming an id not stored there is an HTTP 400; a stored chain is the history the
  next answer depends on.
* **Conversations** (``POST /v1/conversations``, ``conversation=`` on Responses) are mutable: every call
  appends its input and output, so the next answer depends on everything said before.
* **Prompt templates** (``prompt={"id", "version"?, "variables"?}``): without a version the latest one is
  used, and :meth:`World.publish_prompt` can add a version between two calls.
* **Background Responses** (``background=true``) start ``queued`` and move on each retrieve
  (``GET /v1/responses/{id}``): ``in_progress``, then ``completed``.
* **Anthropic containers** (``container=``): each call runs in, and changes, the container's state.

Every model call gets the next call number; :attr:`World.calls` is how the corpus tells whether a request
reached the server.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Final

from corpus.answers import (
    ANSWER_HEADERS,
    CREDENTIAL_PARAMS,
    JSON,
    Events,
    chat_body,
    chat_chunks,
    embeddings_body,
    fingerprint,
    make_turn,
    meaning,
    message_body,
    message_events,
    prompt_of,
    response_body,
    response_events,
)

Org = tuple[str, str]
DEFAULT_ORG: Final[Org] = ("", "")
ORG_A: Final[Org] = ("org-a", "proj-a")

SEED_PROMPT: Final = "pmpt_seed"
SEED_CONTAINER: Final = "container_seed"
SEED_CONVERSATION: Final = "conv_seed"


@dataclass(frozen=True)
class Call:
    """One HTTP request as the server saw it, already routed."""

    upstream: str  # the listener: "main", "alt-host", "alt-port", "tls"
    prefix: str  # the path before the endpoint: "/v1", "/gw/groq/v1", "/openai/deployments/x"
    endpoint: str  # "chat", "responses", "embeddings", "messages", "conversations", "retrieve"
    tail: str  # what follows the endpoint (a response id for "retrieve")
    method: str
    query: tuple[tuple[str, str], ...]
    headers: dict[str, str]
    body: Any

    @property
    def org(self) -> Org:
        return (self.headers.get("openai-organization", ""), self.headers.get("openai-project", ""))


@dataclass
class Reply:
    status: int
    body: Any = None
    events: Events | None = None
    done_marker: bool = False  # chat streams end with ``data: [DONE]``


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


@dataclass
class _Stored:
    org: Org
    history: list[Any]
    body: JSON
    polls: int = 0


@dataclass
class World:
    """All server-side state; every method runs under :attr:`lock` (the server is threaded)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    calls: int = 0
    responses: dict[str, _Stored] = field(default_factory=dict)
    conversations: dict[str, tuple[Org, list[Any]]] = field(default_factory=dict)
    prompts: dict[str, list[str]] = field(default_factory=dict)
    containers: dict[str, list[Any]] = field(default_factory=dict)
    ids: int = 0

    @classmethod
    def seeded(cls) -> World:
        """The world every pair starts from: a few stored responses, a conversation, a prompt, a container."""
        world = cls()
        for rid, org, said in (
            ("resp_seed", DEFAULT_ORG, "remember the number 42"),
            ("resp_seed_a", ORG_A, "remember the number 42"),
            ("resp_seed_a2", ORG_A, "remember the colour red"),
        ):
            world.responses[rid] = _Stored(org, [said, "noted"], {"id": rid, "status": "completed"})
        world.conversations[SEED_CONVERSATION] = (DEFAULT_ORG, ["hello", "hi there"])
        world.conversations["conv_seed_a"] = (ORG_A, ["hello", "hi there"])
        world.prompts[SEED_PROMPT] = ["You are terse.", "You are terse and polite."]
        world.containers[SEED_CONTAINER] = []
        world.containers["container_other"] = []
        return world

    # control, from tests ----------------------------------------------------------------------

    def publish_prompt(self, prompt_id: str, text: str) -> None:
        with self.lock:
            self.prompts.setdefault(prompt_id, []).append(text)

    # the API ------------------------------------------------------------------------------------

    def handle(self, call: Call) -> Reply:
        with self.lock:
            try:
                return self._handle(call)
            except ApiError as exc:
                error = {"message": exc.message, "type": "invalid_request_error", "param": exc.param}
                if call.endpoint == "messages":
                    return Reply(exc.status, {"type": "error", "error": {"type": error["type"], **error}})
                return Reply(exc.status, {"error": {**error, "code": exc.code}})

    def _handle(self, call: Call) -> Reply:
        if call.endpoint == "conversations" and call.method == "POST":
            return self._new_conversation(call)
        if call.endpoint == "retrieve" and call.method == "GET":
            return self._retrieve(call)
        if call.method != "POST" or not isinstance(call.body, dict) or call.tail:
            raise ApiError(404, f"no route for {call.method} {call.prefix}/{call.endpoint}{call.tail}")
        self.calls += 1
        body: JSON = call.body
        state = self._state_for(call, body)
        fp = fingerprint(
            call.upstream,
            call.prefix,
            call.endpoint,
            sorted((k, v) for k, v in call.query if k not in CREDENTIAL_PARAMS),
            {h: call.headers.get(h) for h in ANSWER_HEADERS},
            meaning(body, call.endpoint),
            state,
        )
        if call.endpoint == "embeddings":
            return Reply(200, embeddings_body(body, fp))
        turn = make_turn(self.calls, body, call.endpoint, fp)
        stream = body.get("stream") is True
        if call.endpoint == "chat":
            if stream:
                return Reply(200, events=[(None, c) for c in chat_chunks(turn, body)], done_marker=True)
            return Reply(200, chat_body(turn, body))
        if call.endpoint == "messages":
            self._run_in_container(body, turn.text)
            return (
                Reply(200, events=message_events(turn, body))
                if stream
                else Reply(200, message_body(turn, body))
            )
        return self._respond(call, body, turn, stream=stream)

    def _state_for(self, call: Call, body: JSON) -> Any:
        """The server-side state a model call reads (validated: a missing reference is an API error)."""
        if call.endpoint == "messages":
            container = body.get("container")
            cid = container.get("id") if isinstance(container, dict) else container
            if cid is None:
                return None
            if cid not in self.containers:
                raise ApiError(404, f"container {cid!r} not found", "container")
            return list(self.containers[cid])
        if call.endpoint != "responses":
            return None
        state: JSON = {}
        previous = body.get("previous_response_id")
        if previous is not None:
            stored = self.responses.get(previous)
            if stored is None or stored.org != call.org:
                raise ApiError(
                    400,
                    f"Previous response with id '{previous}' not found.",
                    "previous_response_id",
                    "previous_response_not_found",
                )
            state["previous"] = stored.history
        conversation = self._conversation(call, body)
        if conversation is not None:
            state["conversation"] = list(self.conversations[conversation][1])
        prompt = body.get("prompt")
        if isinstance(prompt, dict):
            versions = self.prompts.get(str(prompt.get("id")))
            version = prompt.get("version")
            index = len(versions) if versions and version is None else int(version or 0)
            if not versions or not 1 <= index <= len(versions):
                raise ApiError(404, f"prompt {prompt.get('id')!r} version {version!r} not found", "prompt")
            state["prompt"] = (index, versions[index - 1])
        if body.get("background") and body.get("store") is False:
            raise ApiError(400, "background mode requires store=true", "background")
        return state

    def _conversation(self, call: Call, body: JSON) -> str | None:
        conversation = body.get("conversation")
        cid = conversation.get("id") if isinstance(conversation, dict) else conversation
        if cid is None:
            return None
        found = self.conversations.get(str(cid))
        if found is None or found[0] != call.org:
            raise ApiError(404, f"Conversation with id '{cid}' not found.", "conversation")
        return str(cid)

    def _run_in_container(self, body: JSON, text: str) -> None:
        container = body.get("container")
        cid = container.get("id") if isinstance(container, dict) else container
        if isinstance(cid, str):
            self.containers[cid].append(text)

    def _respond(self, call: Call, body: JSON, turn: Any, *, stream: bool) -> Reply:
        background = bool(body.get("background"))
        if stream:
            events = response_events(turn, body)
            final = events[-1][1]["response"]
        else:
            final = response_body(turn, body, "queued" if background else None)
        said = [prompt_of(body, "responses"), turn.text or turn.arguments]
        previous = body.get("previous_response_id")
        history = [*(self.responses[previous].history if previous else []), *said]
        if body.get("store", True) is not False:
            done = response_body(turn, body)
            self.responses[final["id"]] = _Stored(call.org, history, done)
        conversation = self._conversation(call, body)
        if conversation is not None:
            self.conversations[conversation][1].extend(said)
        return Reply(200, events=events) if stream else Reply(200, final)

    def _new_conversation(self, call: Call) -> Reply:
        self.ids += 1
        cid = f"conv_{self.ids}"
        items = (call.body or {}).get("items") or [] if isinstance(call.body, dict) else []
        self.conversations[cid] = (call.org, list(items))
        return Reply(200, {"id": cid, "object": "conversation", "created_at": 0, "metadata": {}})

    def _retrieve(self, call: Call) -> Reply:
        rid = call.tail.strip("/")
        stored = self.responses.get(rid)
        if stored is None or stored.org != call.org:
            raise ApiError(404, f"Response with id '{rid}' not found.", "response_id")
        stored.polls += 1
        body = dict(stored.body)
        if body.get("background"):
            stages = ("in_progress", "completed")
            status = stages[min(stored.polls, len(stages)) - 1]
            if status != "completed":
                body.update(status=status, output=[], usage=None, completed_at=None)
        return Reply(200, body)
