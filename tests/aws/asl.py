"""An interpreter for the synthesized state machine, with Step Functions' failure semantics and a virtual clock.

Modelled as AWS documents them (https://docs.aws.amazon.com/step-functions/latest/dg/):
- Task: Parameters with `.$` paths and the context object (`$$.Execution.StartTime`, `$$.Map.Item.Value`),
  Retry (ErrorEquals, IntervalSeconds, BackoffRate, MaxAttempts, MaxDelaySeconds), Catch with ResultPath,
  TimeoutSeconds (States.Timeout); the state machine's role must allow lambda:InvokeFunction on the target.
- Distributed Map with Express children: each child is its own execution, capped at 5 minutes. A child
  that runs out of time fails with States.Timeout, which no Catch inside it can catch. The Map Run fails
  once failed children exceed ToleratedFailurePercentage / ToleratedFailureCount (default 0); the
  execution then fails.
- Choice (BooleanEquals and friends, And/Or/Not, IsPresent), Pass, Succeed, Fail, ResultPath.

Time: each Lambda attempt is charged its function's full configured timeout (the worst case), and each
retry its longest possible wait. A handler's own clock does not run faster, so the context's
Execution.StartTime a Task passes is shifted back by the time charged beyond the real duration: the
handler then sees exactly the virtual time elapsed in its child.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

from tests.aws.iam import decide

EXPRESS_LIMIT_S = 300.0


class StatesError(Exception):
    def __init__(self, error: str, cause: str = "") -> None:
        super().__init__(f"{error}: {cause}")
        self.error, self.cause = error, cause


class ChildTimedOut(Exception):
    """An Express child exceeded 5 minutes: uncatchable inside the child."""


def _get(doc, path: str):
    if path == "$":
        return doc
    assert path.startswith("$."), path
    for part in path[2:].split("."):
        doc = doc[part]
    return doc


def _has(doc, path: str) -> bool:
    try:
        _get(doc, path)
        return True
    except (KeyError, TypeError, IndexError):
        return False


def _set(doc, path: str | None, value):
    if path is None:
        return value
    if path == "$":
        return value
    out = copy.deepcopy(doc) if isinstance(doc, dict) else {}
    cur = out
    parts = path[2:].split(".")
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
    cur[parts[-1]] = value
    return out


@dataclass
class Clock:
    """Virtual seconds charged so far, against the real monotonic clock."""

    charged: float = 0.0
    real0: float = field(default_factory=time.monotonic)

    def now(self) -> float:
        return self.charged


@dataclass
class ChildRun:
    item: dict
    duration_s: float = 0.0
    status: str = "SUCCEEDED"
    output: object = None
    tasks: list[tuple[str, dict]] = field(default_factory=list)


@dataclass
class Execution:
    status: str = "SUCCEEDED"
    output: object = None
    error: StatesError | None = None
    children: list[ChildRun] = field(default_factory=list)
    tasks: list[tuple[str, dict]] = field(default_factory=list)


class Interpreter:
    def __init__(self, definition: dict, *, invoke, timeouts: dict[str, int], role_statements: list[dict]) -> None:
        """invoke(function_arn, payload) -> (result, error dict | None); timeouts: function ARN -> seconds."""
        self.definition, self.invoke, self.timeouts, self.role = definition, invoke, timeouts, role_statements

    # -------------------------------------------------------------- values
    def _params(self, template, doc, ctx):
        if isinstance(template, dict):
            out = {}
            for k, v in template.items():
                if k.endswith(".$"):
                    out[k[:-2]] = self._context(v, ctx) if v.startswith("$$.") else _get(doc, v)
                else:
                    out[k] = self._params(v, doc, ctx)
            return out
        if isinstance(template, list):
            return [self._params(v, doc, ctx) for v in template]
        return template

    def _context(self, path: str, ctx):
        if path == "$$.Execution.StartTime":
            # The child's start, as the handler must see it on its own (unaccelerated) clock.
            shifted = time.time() - (ctx["clock"].now())
            return datetime.fromtimestamp(shifted, timezone.utc).isoformat().replace("+00:00", "Z")
        if path.startswith("$$.Map.Item.Value"):
            return _get(ctx["item"], "$" + path[len("$$.Map.Item.Value"):])
        if path == "$$.Map.Item.Index":
            return ctx["index"]
        raise AssertionError(f"context path {path} is not modelled")

    def _choice(self, rule, doc) -> bool:
        if "And" in rule:
            return all(self._choice(r, doc) for r in rule["And"])
        if "Or" in rule:
            return any(self._choice(r, doc) for r in rule["Or"])
        if "Not" in rule:
            return not self._choice(rule["Not"], doc)
        var = rule["Variable"]
        if "IsPresent" in rule:
            return _has(doc, var) == rule["IsPresent"]
        if not _has(doc, var):
            raise StatesError("States.Runtime", f"Invalid path {var}: the choice state's condition path references "
                                                "an invalid value")
        v = _get(doc, var)
        for op, fn in (("BooleanEquals", lambda a, b: a is b), ("StringEquals", lambda a, b: a == b),
                       ("NumericEquals", lambda a, b: a == b), ("NumericGreaterThan", lambda a, b: a > b),
                       ("NumericLessThan", lambda a, b: a < b)):
            if op in rule:
                return fn(v, rule[op])
        raise AssertionError(f"choice rule {rule} is not modelled")

    # -------------------------------------------------------------- states
    def _task(self, name, s, doc, ctx):
        arn = s["Resource"]
        fn = s["Parameters"]["FunctionName"] if arn.startswith("arn:aws:states:::lambda:invoke") else arn
        d = decide(self.role, "lambda:InvokeFunction", fn)
        if not d.allowed:
            raise StatesError("Lambda.AWSLambdaException", f"states role may not invoke {fn}: {d.reason}")
        retries = {i: 0 for i in range(len(s.get("Retry", [])))}
        while True:
            # Charge the worst case up front, so that whatever the handler decides at its end, it decides
            # seeing the time its invocation may have taken (its full function or task timeout).
            worst = min(float(self.timeouts[fn]), float(s.get("TimeoutSeconds") or 1e9))
            ctx["clock"].charged += worst
            if fn != arn:
                payload = self._params(s["Parameters"].get("Payload", {}), doc, ctx)
            else:
                payload = self._params(s["Parameters"], doc, ctx) if "Parameters" in s else doc
            ctx["tasks"].append((name, payload))
            t_real = time.monotonic()
            result, error = self.invoke(fn, payload)
            real = time.monotonic() - t_real
            if error is not None and error["errorType"].startswith("Lambda."):
                ctx["clock"].charged -= worst  # an invoke error (throttle, service error): the function did not run
            ctx["clock"].charged += max(0.0, real - worst)
            if ctx.get("limit") is not None and ctx["clock"].now() > ctx["limit"]:
                raise ChildTimedOut(f"{name} ran past the Express limit at {ctx['clock'].now():.0f}s")
            if error is None:
                return result
            err = StatesError(error["errorType"], error.get("errorMessage", ""))
            for i, r in enumerate(s.get("Retry", [])):
                if _matches(r["ErrorEquals"], err.error):
                    if retries[i] >= r.get("MaxAttempts", 3):  # MaxAttempts counts retries
                        raise err
                    wait = r.get("IntervalSeconds", 1) * r.get("BackoffRate", 2.0) ** retries[i]
                    wait = min(wait, r.get("MaxDelaySeconds", wait))
                    retries[i] += 1
                    ctx["clock"].charged += wait  # full jitter waits at most this long
                    break
            else:
                raise err

    def run_states(self, states: dict, start: str, doc, ctx):
        name = start
        for _ in range(500):
            s = states[name]
            t = s["Type"]
            try:
                if t == "Task":
                    result = self._task(name, s, doc, ctx)
                    doc = _set(doc, s.get("ResultPath", "$"), result)
                elif t == "Map":
                    doc = _set(doc, s.get("ResultPath", "$"), self._map(s, doc, ctx))
                elif t == "Pass":
                    value = self._params(s["Parameters"], doc, ctx) if "Parameters" in s else s.get("Result", doc)
                    doc = _set(doc, s.get("ResultPath", "$"), value)
                elif t == "Choice":
                    nxt = next((c["Next"] for c in s["Choices"] if self._choice(c, doc)), s.get("Default"))
                    if nxt is None:
                        raise StatesError("States.NoChoiceMatched", name)
                    name = nxt
                    continue
                elif t == "Succeed":
                    return doc
                elif t == "Fail":
                    raise StatesError(s.get("Error", "States.Fail"), s.get("Cause", ""))
                else:
                    raise AssertionError(f"state type {t} is not modelled")
            except StatesError as e:
                if t == "Fail":
                    raise
                catch = next((c for c in s.get("Catch", []) if _matches(c["ErrorEquals"], e.error)), None)
                if catch is None:
                    raise
                doc = _set(doc, catch.get("ResultPath", "$"), {"Error": e.error, "Cause": e.cause})
                name = catch["Next"]
                continue
            if s.get("End"):
                return doc
            name = s["Next"]
        raise AssertionError(f"no end after 500 transitions (near {name})")

    def _map(self, s, doc, ctx):
        items = _get(doc, s.get("ItemsPath", "$"))
        proc = s["ItemProcessor"]
        express = proc.get("ProcessorConfig", {}).get("ExecutionType") == "EXPRESS"
        failed, out = 0, []
        tolerated_pct = s.get("ToleratedFailurePercentage", 0)
        tolerated_n = s.get("ToleratedFailureCount", 0)
        for i, item in enumerate(items):
            child_ctx = {"clock": Clock(), "item": item, "index": i, "tasks": [],
                         "limit": EXPRESS_LIMIT_S if express else None}
            run = ChildRun(item)
            value = self._params(s["ItemSelector"], doc, child_ctx) if "ItemSelector" in s else item
            try:
                run.output = self.run_states(proc["States"], proc["StartAt"], value, child_ctx)
            except ChildTimedOut as e:
                run.status, run.output = "TIMED_OUT", {"Error": "States.Timeout", "Cause": str(e)}
            except StatesError as e:
                run.status, run.output = "FAILED", {"Error": e.error, "Cause": e.cause}
            run.duration_s, run.tasks = child_ctx["clock"].now(), child_ctx["tasks"]
            ctx["children"].append(run)
            ctx["tasks"] += run.tasks
            out.append(run.output)
            if run.status != "SUCCEEDED":
                failed += 1
                if failed > tolerated_n and failed * 100 > tolerated_pct * len(items):
                    raise StatesError("States.ExceedToleratedFailureThreshold",
                                      f"{failed} of {len(items)} children failed; the Map Run is aborted")
        return out

    def execute(self, event) -> Execution:
        ctx = {"clock": Clock(), "tasks": [], "children": [], "limit": None}
        ex = Execution()
        try:
            ex.output = self.run_states(self.definition["States"], self.definition["StartAt"], event, ctx)
        except StatesError as e:
            ex.status, ex.error = "FAILED", e
        ex.children, ex.tasks = ctx["children"], ctx["tasks"]
        return ex


def _matches(errors: list[str], error: str) -> bool:
    # States.ALL matches every error but States.Runtime and States.DataLimitExceeded (AWS: "Error names").
    if error in errors:
        return True
    return "States.ALL" in errors and error not in ("States.Runtime", "States.DataLimitExceeded")
