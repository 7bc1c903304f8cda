"""The HTTP layer every connector stands on.

One :class:`HttpClient` (one aiohttp session) per run; :meth:`HttpClient.service` gives each
connector a :class:`Service` with its base URL, credential, response policy, token bucket and
in-flight cap. See ``docs/http.md``.

Example::

    from cfstream.http import BearerAuth, HttpClient, LinkHeaderPaginator, RateLimit

    async with HttpClient() as http:
        gh = http.service("github", base_url="https://api.github.com", auth=BearerAuth(token),
                          rate=RateLimit(per_second=10, burst=10))
        async for page in gh.paginate(LinkHeaderPaginator(), "/repos/o/r/issues",
                                      params={"per_page": 100}):
            for issue in page.data:
                ...
"""

from __future__ import annotations

from cfstream.http.auth import Auth as Auth
from cfstream.http.auth import BearerAuth as BearerAuth
from cfstream.http.auth import HeaderAuth as HeaderAuth
from cfstream.http.auth import NoAuth as NoAuth
from cfstream.http.auth import origin_of as origin_of
from cfstream.http.auth import same_origin as same_origin
from cfstream.http.client import HttpClient as HttpClient
from cfstream.http.client import JsonResponse as JsonResponse
from cfstream.http.client import Service as Service
from cfstream.http.metrics import HttpMetrics as HttpMetrics
from cfstream.http.paginate import BodyCursorPaginator as BodyCursorPaginator
from cfstream.http.paginate import GraphQLPaginator as GraphQLPaginator
from cfstream.http.paginate import LinkHeaderPaginator as LinkHeaderPaginator
from cfstream.http.paginate import PageRequest as PageRequest
from cfstream.http.paginate import PageTokenPaginator as PageTokenPaginator
from cfstream.http.paginate import Paginator as Paginator
from cfstream.http.paginate import SeenRequests as SeenRequests
from cfstream.http.paginate import SnowflakePaginator as SnowflakePaginator
from cfstream.http.paginate import get_path as get_path
from cfstream.http.paginate import parse_link_header as parse_link_header
from cfstream.http.policies import GenericPolicy as GenericPolicy
from cfstream.http.policies import Problem as Problem
from cfstream.http.policies import RawResponse as RawResponse
from cfstream.http.policies import ResponsePolicy as ResponsePolicy
from cfstream.http.policies import Verdict as Verdict
from cfstream.http.policies import join_message as join_message
from cfstream.http.policies import policy_for as policy_for
from cfstream.http.policies import register_policy as register_policy
from cfstream.http.ratelimit import Gate as Gate
from cfstream.http.ratelimit import RateLimit as RateLimit
from cfstream.http.retry import RetryPolicy as RetryPolicy
from cfstream.http.retry import parse_reset as parse_reset
from cfstream.http.retry import parse_retry_after as parse_retry_after

__all__ = (
    "Auth",
    "BearerAuth",
    "BodyCursorPaginator",
    "Gate",
    "GenericPolicy",
    "GraphQLPaginator",
    "HeaderAuth",
    "HttpClient",
    "HttpMetrics",
    "JsonResponse",
    "LinkHeaderPaginator",
    "NoAuth",
    "PageRequest",
    "PageTokenPaginator",
    "Paginator",
    "Problem",
    "RateLimit",
    "RawResponse",
    "ResponsePolicy",
    "RetryPolicy",
    "SeenRequests",
    "Service",
    "SnowflakePaginator",
    "Verdict",
    "get_path",
    "join_message",
    "origin_of",
    "parse_link_header",
    "parse_reset",
    "parse_retry_after",
    "policy_for",
    "register_policy",
    "same_origin",
)
