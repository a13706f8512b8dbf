"""Uploads a file to Cocon with tuspy, a third-party TUS client, the way an app would: the first
client sends one part and stops; a second one, started later, finds the upload in its URL store,
asks the server how far it got and sends the rest, each part with its SHA-1 checksum.

Usage: tuspy_upload.py UPLOADS_URL INSTANCE_DOMAIN TOKEN FILE
"""

import os
import sys
import tempfile

from tusclient import client
from tusclient.storage import filestorage

url, domain, token, path = sys.argv[1:5]
headers = {"Host": domain, "Authorization": f"Bearer {token}"}
chunk = 1024 * 1024
store_path = os.path.join(tempfile.mkdtemp(), "tus-urls.json")
meta = {"filename": "from-tuspy.bin", "filetype": "application/octet-stream"}


def uploader():
    """A client that keeps its uploads' URLs in a file, to resume them after a restart."""
    return client.TusClient(url, headers=headers).uploader(
        path,
        chunk_size=chunk,
        metadata=meta,
        store_url=True,
        url_storage=filestorage.FileStorage(store_path),
        upload_checksum=True,
    )


first = uploader()
first.upload_chunk()
assert first.offset == chunk, first.offset
upload_url = first.url

# A new client, as after a restart: it resumes the stored upload instead of starting over.
second = uploader()
assert second.url == upload_url, (second.url, upload_url)
assert second.offset == chunk, f"resumed at {second.offset}, not {chunk}"
second.upload()
assert second.offset == os.path.getsize(path), second.offset
print("uploaded", second.offset, "bytes to", upload_url)
