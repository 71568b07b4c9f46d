"""GitHub's REST API, as much of it as the sticky comment needs: urllib only.

- every request carries the token only to the configured API host;
- a 5xx answer or a network error is retried `attempts` times with a linear backoff;
- a rate limit (429, or 403 with `x-ratelimit-remaining: 0` or a `Retry-After`) is waited out as GitHub
  asks: `Retry-After` seconds, or until `x-ratelimit-reset` (epoch seconds), or one minute when it says
  neither. The waiting is capped (`rate_limit_retries` retries, `rate_limit_wait` seconds in total over the
  client's life); past the cap the client raises RateLimited instead of sleeping, and the step turns that
  into a notice, never into a failure of the gate's verdict;
- lists are followed through their `Link: <...>; rel="next"` headers, at most MAX_PAGES pages.
"""

from __future__ import annotations

import email.utils
import json
import math
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

API_VERSION = "2022-11-28"
MAX_PAGES = 100  # 10,000 comments at per_page=100
RATE_LIMIT_RETRIES = 3
RATE_LIMIT_WAIT = 60.0  # seconds, in total: a step waiting longer for a courtesy comment costs more than it gives
UNSPECIFIED_WAIT = 60.0  # GitHub's advice for a secondary rate limit that names no time: "at least one minute"


class GitHubError(Exception):
    def __init__(self, status: int | None, message: str, url: str = "") -> None:
        self.status, self.message, self.url = status, message, url
        super().__init__(f"{status or 'no answer'}: {message}" + (f" ({url})" if url else ""))


class RateLimited(GitHubError):
    """GitHub kept answering "rate limited" beyond what the client is allowed to wait."""

    def __init__(self, status: int, message: str, url: str = "", *, why: str) -> None:
        super().__init__(status, message, url)
        self.why = why  # what the client waited and why it stopped

    def __str__(self) -> str:
        return f"{super().__str__()}: {self.why}"


_LINK = re.compile(r'<([^>]+)>\s*;\s*rel="?([^";]+)"?')


def next_link(header: str | None) -> str | None:
    """The rel="next" URL of a Link header, or None."""
    for url, rels in _LINK.findall(header or ""):
        if "next" in rels.split():
            return url
    return None


def _seconds(value: str | None, now: float) -> float | None:
    """A Retry-After value: delta-seconds, or an HTTP date (RFC 9110); None when it is neither."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None or when.tzinfo is None:
            return None
        seconds = when.timestamp() - now
    return max(seconds, 0.0) if math.isfinite(seconds) else None


def rate_limit_wait(status: int, headers: Mapping[str, str] | None, message: str = "", *,
                    now: float) -> float | None:
    """Seconds GitHub asks the client to wait before it retries, or None when the answer is no rate limit.

    GitHub's rules (REST API docs, "Rate limits"): a 403 or 429 with `retry-after` -> that many seconds;
    with `x-ratelimit-remaining: 0` -> until `x-ratelimit-reset` (UTC epoch seconds); a 429, or a 403 that
    says "rate limit", without either -> at least one minute. Any other 403 is a permission answer
    (a fork's read-only token) and is not retried.
    """
    if status not in (403, 429):
        return None
    headers = headers or {}
    retry_after = _seconds(headers.get("Retry-After"), now)
    if retry_after is not None:
        return retry_after
    if str(headers.get("x-ratelimit-remaining", "")).strip() == "0":
        try:
            reset = float(headers.get("x-ratelimit-reset", ""))
        except (TypeError, ValueError):
            return UNSPECIFIED_WAIT
        if not math.isfinite(reset):
            return UNSPECIFIED_WAIT
        return max(math.ceil(reset - now), 0) + 1.0  # the reset is whole seconds: one more is never early
    if status == 429 or "rate limit" in message.lower():
        return UNSPECIFIED_WAIT
    return None


@dataclass
class GitHubClient:
    api_url: str
    token: str
    timeout: float = 30.0
    attempts: int = 3
    backoff: float = 1.0
    rate_limit_retries: int = RATE_LIMIT_RETRIES
    rate_limit_wait: float = RATE_LIMIT_WAIT  # seconds, in total over this client's requests
    sleep: Callable[[float], None] = time.sleep  # injected by tests: nothing sleeps for real there
    clock: Callable[[], float] = time.time  # UTC epoch seconds, against x-ratelimit-reset
    requests: list = field(default_factory=list)  # (method, url): what was asked, for the log
    waited: list = field(default_factory=list)  # seconds slept for rate limits, one entry a retry

    def __post_init__(self) -> None:
        self.api_url = self.api_url.rstrip("/")

    def url(self, path: str, **query) -> str:
        q = {k: v for k, v in query.items() if v is not None}
        return f"{self.api_url}{path}" + (f"?{urllib.parse.urlencode(q)}" if q else "")

    def _wait_out(self, status: int, message: str, url: str, wait: float, retries: int) -> None:
        """Sleep as GitHub asked, or raise RateLimited when that would pass the cap."""
        spent = sum(self.waited)
        if retries >= self.rate_limit_retries:
            raise RateLimited(status, message, url, why=f"still rate limited after {retries} retr"
                                                        f"{'y' if retries == 1 else 'ies'}, {spent:g} s waited")
        if spent + wait > self.rate_limit_wait:
            raise RateLimited(status, message, url,
                              why=f"GitHub asked to wait {wait:g} s, beyond the {self.rate_limit_wait:g} s "
                                  f"the gate waits in total, {spent:g} s waited already")
        self.waited.append(wait)
        self.sleep(wait)

    def request(self, method: str, url: str, body: dict | None = None) -> tuple[object, dict]:
        if not url.startswith(self.api_url + "/"):
            raise GitHubError(None, f"refusing to send the token to {url}: not under {self.api_url}")
        data = json.dumps(body).encode("utf-8") if body is not None else None
        headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": API_VERSION,
                   "User-Agent": "compression-gate", "Authorization": f"Bearer {self.token}"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        attempt, limited = 1, 0
        while True:
            self.requests.append((method, url))
            req = urllib.request.Request(url, data=data, method=method, headers=headers)
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    raw = resp.read()
                    return (json.loads(raw) if raw.strip() else None), dict(resp.headers.items())
            except urllib.error.HTTPError as exc:
                with exc:
                    text = exc.read(4000).decode("utf-8", "replace")
                try:
                    message = json.loads(text).get("message", text)
                except (ValueError, AttributeError):
                    message = text.strip() or exc.reason
                wait = rate_limit_wait(exc.code, exc.headers, str(message), now=self.clock())
                if wait is not None:
                    self._wait_out(exc.code, str(message), url, wait, limited)
                    limited += 1
                    continue
                if exc.code >= 500 and attempt < self.attempts:
                    self.sleep(self.backoff * attempt)
                    attempt += 1
                    continue
                raise GitHubError(exc.code, str(message), url) from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                if attempt < self.attempts:
                    self.sleep(self.backoff * attempt)
                    attempt += 1
                    continue
                raise GitHubError(None, str(getattr(exc, "reason", exc)), url) from None

    def paginate(self, url: str):
        for _ in range(MAX_PAGES):
            data, headers = self.request("GET", url)
            if not isinstance(data, list):
                raise GitHubError(None, f"expected a list, got {type(data).__name__}", url)
            yield from data
            url = next_link(headers.get("Link") or headers.get("link"))
            if url is None:
                return

    # issue comments (a pull request is an issue for comments)
    def find_comment(self, repo: str, number: int, marker: str) -> dict | None:
        url = self.url(f"/repos/{repo}/issues/{number}/comments", per_page=100)
        for comment in self.paginate(url):
            if str(comment.get("body") or "").startswith(marker):
                return comment
        return None

    def upsert_comment(self, repo: str, number: int, body: str, marker: str) -> tuple[str, dict]:
        """('created' | 'updated' | 'unchanged', the comment)."""
        existing = self.find_comment(repo, number, marker)
        if existing is None:
            data, _ = self.request("POST", self.url(f"/repos/{repo}/issues/{number}/comments"), {"body": body})
            return "created", data if isinstance(data, dict) else {}
        if existing.get("body") == body:
            return "unchanged", existing
        data, _ = self.request("PATCH", self.url(f"/repos/{repo}/issues/comments/{existing['id']}"), {"body": body})
        return "updated", data if isinstance(data, dict) else {}

    def find_pull_request(self, repo: str, head_owner: str, head_branch: str, head_sha: str) -> int | None:
        url = self.url(f"/repos/{repo}/pulls", state="open", head=f"{head_owner}:{head_branch}", per_page=100)
        for pr in self.paginate(url):
            if (pr.get("head") or {}).get("sha") == head_sha:
                return int(pr["number"])
        return None


def pull_request_number(event_name: str, event: dict, client: GitHubClient | None = None,
                        repo: str = "") -> int | None:
    """The pull request this run is about, from the trusted event (never from an artifact)."""
    if event_name in ("pull_request", "pull_request_target", "pull_request_review",
                      "pull_request_review_comment"):
        pr = event.get("pull_request") or {}
        number = pr.get("number", event.get("number"))
        return int(number) if number is not None else None
    if event_name == "issue_comment":
        issue = event.get("issue") or {}
        return int(issue["number"]) if "pull_request" in issue and "number" in issue else None
    if event_name == "workflow_run":
        run = event.get("workflow_run") or {}
        if run.get("event") not in ("pull_request", "pull_request_target"):
            return None
        for pr in run.get("pull_requests") or []:  # filled for same-repository branches only
            base_repo = ((pr.get("base") or {}).get("repo") or {}).get("name")
            if pr.get("number") is not None and (not base_repo or repo.endswith("/" + base_repo)):
                if (pr.get("head") or {}).get("sha") in (None, run.get("head_sha")):
                    return int(pr["number"])
        owner = ((run.get("head_repository") or {}).get("owner") or {}).get("login")
        if client and owner and run.get("head_branch") and run.get("head_sha"):
            return client.find_pull_request(repo, owner, run["head_branch"], run["head_sha"])
    return None
