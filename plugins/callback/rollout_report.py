"""rollout_report: a per-robot timeline and report of a rollout, as JSON, text, a picture and a page."""

from __future__ import annotations

DOCUMENTATION = r"""
---
name: rollout_report
type: aggregate
short_description: Write a rollout's per-robot timeline and report (JSON, text, PNG timeline, HTML)
description:
  - Records, for every robot, each task's start, end and outcome, and the wave it ran in (the serial
    batch of its play), numbered from the first batch in which a robot ran a task, so a batch of robots
    that were all unreachable or had failed before is no wave (includes, and tasks that run once for a
    whole batch, do not put a robot in a wave). Plays without C(serial) have no waves.
  - Merges the C(rollout_report) fact that rollout tasks set on a robot (release before and after,
    bytes staged, engine builds or cache hits, health results, rollbacks, deferrals) into that robot's
    report, and adds its timings (seconds per play, so per wave, and in all).
  - Keeps, per robot, what each engine gate said, passed or refused (C(engine_gates), from the
    C(trt_engine) results; C(passed), C(reason), C(precision), C(fingerprint), C(p99_ms) and
    C(p99_target_ms), and C(accuracy) with a labelled golden set, so both accuracies, FP32
    C(reference_accuracy) and the engine's C(candidate_accuracy), with C(drop_points) and the limit).
  - A failed loop's error is what its failed items said, not Ansible's "One or more items failed"
    (nor a rescue's failure that only repeats that).
  - A robot that rolled itself back from the release it tried gets that tag as C(release_tried)
    (C(release_after) is the tag it runs); C(release_tried) is null for every other robot.
  - Keeps why a rollout stopped (the C(rollout_stopped) fact that the failure threshold sets) as the
    report's C(stopped).
  - Keeps the run's rollout lease (the C(rollout_lease) fact, owner, run id and release) as the report's
    C(lease), so that the run id another rollout's refusal names leads to this report. What happened
    to each robot's lease (held, refused naming the holder, lost, released) is that robot's C(lease).
  - When the playbook ends (even when a failed canary stopped it) writes C(report.json),
    C(summary.txt), C(timeline.png) and C(report.html) (the robots' table and the timeline) to a new
    folder under O(report_dir).
  - Unreachable robots are reported as such, with the last step they reached.
requirements:
  - matplotlib on the controller for the picture (the JSON and text are written without it)
options:
  report_dir:
    description:
      - Folder that receives one sub-folder per run.
      - When unset, C(rollouts) below the folder the environment variable C(EDGE_DEPLOY_REPORTS) names
        (the root of every Edge Deploy report), else C(reports/rollouts) below the working directory.
    type: path
    env:
      - name: EDGE_ROLLOUT_REPORT_DIR
    ini:
      - section: edge_rollout_report
        key: report_dir
"""

import json
import os
import time

from ansible.plugins.callback import CallbackBase

# Tasks that only bring in other tasks: reaching one does not put a robot in a wave.
INCLUDES = ("include_role", "include_tasks")
ENGINE_ACTIONS = ("trt_engine",)


def _items(res):
    """A task's result, or its loop's item results."""
    items = res.get("results")
    return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else [res]


def _engine_gates(res):
    """engine name -> its gate summary (trt_engine's `gate`), precision and fingerprint added."""
    gates = {}
    for item in _items(res):
        if item.get("name") and isinstance(item.get("gate"), dict):
            gates[str(item["name"])] = dict(
                item["gate"], precision=item.get("precision"), fingerprint=item.get("fingerprint")
            )
    return gates


# Ansible's message for a loop with failed items; a rescue that fails again with its
# ansible_failed_result.msg repeats it: it never replaces the items' own messages.
LOOP_FAILED = "One or more items failed"


def _error(res, before=None):
    """Why a task failed: its message, or its failed loop items' messages; `before` (an earlier
    failure's) when all this one says is that some loop items failed."""
    failed = [str(item.get("msg", "")) for item in _items(res) if item.get("failed") and item is not res]
    found = "; ".join(m for m in failed if m) or str(res.get("msg", ""))
    return (before if before and found.strip() == LOOP_FAILED else found)[:2000]


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "edge_deploy.jetson.rollout_report"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.started = time.time()
        self.playbook = None
        self.plays = []
        self.hosts = {}
        self.running = {}
        self.stopped = None
        self.lease = None

    # -- what happens ------------------------------------------------------------------------
    def v2_playbook_on_start(self, playbook):
        self.playbook = os.path.basename(playbook._file_name)

    def v2_playbook_on_play_start(self, play):
        # Ansible starts a serial play once per batch, each time with a copy of the play, and the
        # batches of a play come one after the other. The copy's _uuid is no way to tell them
        # apart: ansible-runner's stdout callback, called first, renames it (<uuid>_2, _3, ...).
        # Where the play is written in the playbook does not change.
        where = (play.get_path(), play.get_name())
        previous = self.plays[-1] if self.plays else None
        same_play = previous is not None and previous["where"] == where
        self.plays.append(
            {
                "name": play.get_name(),
                "where": where,
                "started": time.time(),
                "serial": bool(play.serial),
                # shared by the batches of one play: how many of them were waves
                "waves": previous["waves"] if same_play else {"count": 0},
                "wave": None,
                "steps": [],
            }
        )

    def _play(self):
        return self.plays[-1] if self.plays else {"name": "", "serial": False, "wave": None}

    @staticmethod
    def _enter_wave(play):
        """The batch is a wave from its first robot that runs a task in it; number it then."""
        if play["wave"] is None:
            play["waves"]["count"] += 1
            play["wave"] = play["waves"]["count"]
            for step in play["steps"]:
                step["wave"] = play["wave"]
        return play["wave"]

    def _host(self, name):
        return self.hosts.setdefault(name, {"steps": [], "report": {}, "status": "ok", "wave": None})

    def v2_runner_on_start(self, host, task):
        self.running[(host.get_name(), task._uuid)] = time.time()

    def _record(self, result, status):
        name = result._host.get_name()
        task = result._task
        started = self.running.pop((name, task._uuid), None) or time.time()
        host = self._host(name)
        play = self._play()
        if play["serial"] and not task.run_once and not task.action.endswith(INCLUDES):
            host["wave"] = self._enter_wave(play)
        step = {
            "play": play["name"],
            "task": task.get_name(),
            "status": status,
            "start": started - self.started,
            "end": time.time() - self.started,
            "wave": play["wave"],
        }
        host["steps"].append(step)
        if play["serial"] and play["wave"] is None:
            play["steps"].append(step)  # numbered when the batch becomes a wave
        res = result._result or {}
        facts = res.get("ansible_facts") or {}
        if isinstance(facts.get("rollout_report"), dict):
            host["report"].update(facts["rollout_report"])
        if facts.get("rollout_stopped"):
            self.stopped = str(facts["rollout_stopped"])
        if task.action.split(".")[-1] in ENGINE_ACTIONS:
            host.setdefault("engine_gates", {}).update(_engine_gates(res))
        if isinstance(facts.get("rollout_lease"), dict):
            self.lease = facts["rollout_lease"]
        if status in ("failed", "unreachable"):
            host["status"] = status
            host["error"] = _error(res, host.get("error"))

    def v2_runner_on_ok(self, result):
        self._record(result, "changed" if result._result.get("changed") else "ok")

    def v2_runner_item_on_ok(self, result):
        # A fact one robot sets for another (delegate_facts): the rollout lease released from a
        # robot of the last wave for the robots still waiting, when Ansible ends the run there.
        task = result._task
        facts = (result._result or {}).get("ansible_facts") or {}
        if task.delegate_facts and task.delegate_to and isinstance(facts.get("rollout_report"), dict):
            self._host(str(task.delegate_to))["report"].update(facts["rollout_report"])

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._record(result, "ignored" if ignore_errors else "failed")

    def v2_runner_on_unreachable(self, result):
        self._record(result, "unreachable")

    def v2_runner_on_skipped(self, result):
        self.running.pop((result._host.get_name(), result._task._uuid), None)

    # -- the report --------------------------------------------------------------------------
    @staticmethod
    def _release_tried(report):
        """The tag a robot rolled itself back from: its target, when it runs another tag.

        rollback.yml's robots roll back too, but to their target: they tried nothing else.
        """
        runs = report.get("release_after") or report.get("rolled_back_to")
        target = report.get("release_target")
        return target if report.get("rolled_back") and target and target != runs else None

    @staticmethod
    def _timings(steps):
        """Seconds from the first to the last task of each play (one per wave), and in all."""
        spans = {}
        for step in steps:
            start, end = spans.get(step["play"], (step["start"], step["end"]))
            spans[step["play"]] = (min(start, step["start"]), max(end, step["end"]))
        timings = {play: round(end - start, 1) for play, (start, end) in spans.items()}
        if steps:
            timings["total"] = round(max(s["end"] for s in steps) - min(s["start"] for s in steps), 1)
        return timings

    def v2_playbook_on_stats(self, stats):
        root = self.get_option("report_dir") or os.path.join(
            os.environ.get("EDGE_DEPLOY_REPORTS") or "reports", "rollouts"
        )
        folder = os.path.join(root, time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))
        os.makedirs(folder, exist_ok=True)
        report = {
            "playbook": self.playbook,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
            "duration_s": round(time.time() - self.started, 1),
            "stopped": self.stopped,
            "lease": self.lease,
            "robots": {},
        }
        for name, host in sorted(self.hosts.items()):
            summary = stats.summarize(name)
            report["robots"][name] = dict(
                host["report"],
                release_tried=self._release_tried(host["report"]),
                status=host["status"],
                wave=host["wave"],
                error=host["report"].get("error") or host.get("error"),
                engine_gates=host.get("engine_gates") or {},
                stats=summary,
                timings=self._timings(host["steps"]),
                steps=host["steps"],
            )
        path = os.path.join(folder, "report.json")
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=2, sort_keys=True, default=str)
            handle.write("\n")
        try:
            from edge_deploy.report import render

            outputs = render(path)
        except ImportError as exc:
            outputs = {"note": "no picture: %s" % exc}
        self._display.display(
            "rollout report: %s %s" % (path, " ".join("%s" % value for value in outputs.values()))
        )
