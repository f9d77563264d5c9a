"""The Langdock Usage Export API client (`/export/api-keys`), and what a cycle needs of it.

connect.py  `connect(config)`: the client the configuration describes, and its connections;
            `connect_all(config)`: one per workspace
client.py   `LangdockClient.export_api_keys(start, end, workdir)`: request, retries, range
            splitting, the signed download streamed and measured as it is written
answers.py  what each answer means (200, 404 "No data found", 400 "Export too large", ...)
ranges.py   export ranges in wall-clock time, asked for in UTC across a DST fall-back
retry.py    backoff with full jitter, Retry-After and one budget per range
http.py     one httpx request with an end-to-end deadline that a shutdown cuts short
"""

from costwatch.langdock.client import ExportPart, ExportResult, LangdockClient
from costwatch.langdock.connect import connect, connect_all
from costwatch.langdock.retry import RetryPolicy

__all__ = ["ExportPart", "ExportResult", "LangdockClient", "RetryPolicy", "connect", "connect_all"]
