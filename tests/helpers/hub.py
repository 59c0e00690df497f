"""A stand-in for the Hugging Face Hub's API that records what a push sends."""

from __future__ import annotations


class RecordingHub:
    """Records create_repo and create_commit calls, with every file's bytes; can fail first."""

    def __init__(self, failures: list[Exception] | None = None):
        self.repos: list[dict] = []
        self.commits: list[dict] = []
        self.failures = list(failures or [])

    def create_repo(self, repo_id, *, repo_type=None, private=None, exist_ok=False, **_):
        self.repos.append({"repo_id": repo_id, "repo_type": repo_type, "private": private, "exist_ok": exist_ok})

    def create_commit(self, repo_id, operations, *, commit_message, repo_type=None, **_):
        if self.failures:
            raise self.failures.pop(0)
        files = {}
        for op in operations:
            source = op.path_or_fileobj
            files[op.path_in_repo] = source if isinstance(source, bytes) else open(source, "rb").read()
        self.commits.append({"repo_id": repo_id, "message": commit_message, "repo_type": repo_type, "files": files})
