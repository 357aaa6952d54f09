"""The WeChat store, on the ledger: access tokens, uploads, intents, drafts, remote images.

`wechat_intents` makes the non-idempotent API calls (draft/add, freepublish/submit) safe to
re-run: the intent row is committed before the call, and the call's result is recorded in
`wechat_drafts` in the same transaction that deletes the intent; a push that finds an intent
left by a crash reconciles it with the platform first (channels/wechat/transport.py).
"""

from __future__ import annotations

from publisher.stores.base import Store, db_errors, now_iso

TOKENS_SCHEMA = """
CREATE TABLE IF NOT EXISTS wechat_tokens (
    app_id      TEXT NOT NULL,
    mode        TEXT NOT NULL,
    token       TEXT NOT NULL,
    expires_at  REAL NOT NULL,
    obtained_at REAL NOT NULL,
    PRIMARY KEY (app_id, mode)
);
"""

UPLOAD_SCHEMA = """
CREATE TABLE IF NOT EXISTS wechat_uploads (
    app_id      TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('uploadimg', 'material')),
    url         TEXT,
    media_id    TEXT,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (app_id, sha256, kind)
);
CREATE TABLE IF NOT EXISTS wechat_intents (
    app_id      TEXT NOT NULL,
    issue       TEXT NOT NULL,
    step        TEXT NOT NULL CHECK (step IN ('draft_add', 'publish_submit')),
    media_id    TEXT,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (app_id, issue, step)
);
CREATE TABLE IF NOT EXISTS wechat_drafts (
    app_id        TEXT NOT NULL,
    issue         TEXT NOT NULL,
    media_id      TEXT NOT NULL,
    publish_id    TEXT,
    publish_status INTEGER,
    article_url   TEXT,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    PRIMARY KEY (app_id, issue)
);
"""

# remote images of an issue: URL -> hash of the bytes downloaded (whose upload is in wechat_uploads)
REMOTE_SCHEMA = """
CREATE TABLE IF NOT EXISTS wechat_remote_images (
    app_id      TEXT NOT NULL,
    url         TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (app_id, url)
);
"""

SCHEMA = TOKENS_SCHEMA + UPLOAD_SCHEMA + REMOTE_SCHEMA


class WeChatStore:
    """The WeChat tables of the ledger `db`; created when opened unless `create` is false (a
    reader that must not write: its queries then find nothing when the tables do not exist)."""

    def __init__(self, db: Store, *, create: bool = True):
        self.db = db
        if create:
            db.ensure(SCHEMA)

    # -- access tokens -----------------------------------------------------------------------

    def token(self, app_id: str, mode: str):
        """(token, expires_at) cached for this account and token mode, or None."""
        return self.db.connect().execute(
            "SELECT token, expires_at FROM wechat_tokens WHERE app_id = ? AND mode = ?",
            (app_id, mode),
        ).fetchone()

    def put_token(self, app_id: str, mode: str, token: str, expires_at: float, obtained_at: float) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                """INSERT INTO wechat_tokens (app_id, mode, token, expires_at, obtained_at)
                   VALUES (?, ?, ?, ?, ?)
                   ON CONFLICT (app_id, mode) DO UPDATE SET token = excluded.token,
                     expires_at = excluded.expires_at, obtained_at = excluded.obtained_at""",
                (app_id, mode, token, expires_at, obtained_at),
            )

    # -- uploads -----------------------------------------------------------------------------

    def upload(self, app_id: str, sha256: str, kind: str):
        """(url, media_id) of content `sha256` uploaded as `kind` to this account, or None."""
        return self.db.connect().execute(
            "SELECT url, media_id FROM wechat_uploads WHERE app_id = ? AND sha256 = ? AND kind = ?",
            (app_id, sha256, kind),
        ).fetchone()

    def put_upload(self, app_id: str, sha256: str, kind: str, url: str | None, media_id: str | None) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                """INSERT INTO wechat_uploads (app_id, sha256, kind, url, media_id, created_at)
                   VALUES (?, ?, ?, ?, ?, ?)
                   ON CONFLICT (app_id, sha256, kind) DO UPDATE SET url = excluded.url,
                     media_id = excluded.media_id, created_at = excluded.created_at""",
                (app_id, sha256, kind, url, media_id, now_iso()),
            )

    def put_remote(self, app_id: str, url: str, sha256: str) -> None:
        """Remote image `url` was downloaded as content `sha256` (uploaded in wechat_uploads)."""
        with self.db.transaction() as conn:
            conn.execute("INSERT INTO wechat_remote_images (app_id, url, sha256, created_at) "
                         "VALUES (?, ?, ?, ?) ON CONFLICT (app_id, url) DO UPDATE SET "
                         "sha256 = excluded.sha256, created_at = excluded.created_at",
                         (app_id, url, sha256, now_iso()))

    def remote_uploads(self, app_id: str) -> dict[str, str]:
        """Remote image URL -> the mmbiz URL its content was uploaded as (this account)."""
        rows = self.db.connect().execute(
            """SELECT r.url, u.url AS uploaded FROM wechat_remote_images r JOIN wechat_uploads u
               ON u.app_id = r.app_id AND u.sha256 = r.sha256 AND u.kind = 'uploadimg'
               WHERE r.app_id = ?""", (app_id,)).fetchall()
        return {row["url"]: row["uploaded"] for row in rows}

    def image_urls(self, app_id: str) -> tuple[dict[str, str], dict[str, str]]:
        """({content sha256: mmbiz URL}, {remote URL: mmbiz URL}) of this account's in-article
        images; both empty when nothing was ever pushed to WeChat with this ledger."""
        try:
            rows = self.db.connect().execute(
                "SELECT sha256, url FROM wechat_uploads WHERE app_id = ? AND kind = 'uploadimg'", (app_id,))
            return {row["sha256"]: row["url"] for row in rows}, self.remote_uploads(app_id)
        except db_errors():  # no such table: nothing pushed to WeChat yet
            return {}, {}

    # -- intents, drafts and publishes -------------------------------------------------------

    def intend(self, app_id: str, issue: str, step: str, media_id: str | None) -> None:
        """Commit the intent to make a non-idempotent call (draft_add, publish_submit)."""
        with self.db.transaction() as conn:
            conn.execute("INSERT INTO wechat_intents (app_id, issue, step, media_id, created_at) "
                         "VALUES (?, ?, ?, ?, ?) ON CONFLICT (app_id, issue, step) DO UPDATE SET "
                         "media_id = excluded.media_id, created_at = excluded.created_at",
                         (app_id, issue, step, media_id, now_iso()))

    def intents(self, app_id: str, issue: str) -> dict:
        """The open intents of this issue: step -> row (step, media_id, created_at)."""
        return {r["step"]: r for r in self.db.connect().execute(
            "SELECT step, media_id, created_at FROM wechat_intents WHERE app_id = ? AND issue = ?",
            (app_id, issue))}

    def drop_intent(self, app_id: str, issue: str, step: str) -> None:
        """The call of this intent never took effect."""
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM wechat_intents WHERE app_id = ? AND issue = ? AND step = ?",
                         (app_id, issue, step))

    def record_draft(self, app_id: str, issue: str, media_id: str) -> None:
        """The issue's draft is `media_id` (a new draft forgets the old one's publish); the
        draft_add intent is cleared in the same transaction."""
        now = now_iso()
        with self.db.transaction() as conn:
            conn.execute(
                """INSERT INTO wechat_drafts (app_id, issue, media_id, created_at, updated_at)
                   VALUES (?, ?, ?, ?, ?)
                   ON CONFLICT (app_id, issue) DO UPDATE SET media_id = excluded.media_id,
                     publish_id = CASE WHEN wechat_drafts.media_id = excluded.media_id
                                       THEN wechat_drafts.publish_id END,
                     publish_status = CASE WHEN wechat_drafts.media_id = excluded.media_id
                                       THEN wechat_drafts.publish_status END,
                     updated_at = excluded.updated_at""",
                (app_id, issue, media_id, now, now),
            )
            conn.execute("DELETE FROM wechat_intents WHERE app_id = ? AND issue = ? AND step = 'draft_add'",
                         (app_id, issue))

    def record_publish(self, app_id: str, issue: str, publish_id: str, status: int | None,
                       url: str | None, *, clear: str | None = None) -> None:
        """The draft's publish (and its status and article URL); the intent `clear` is cleared
        in the same transaction."""
        with self.db.transaction() as conn:
            conn.execute(
                """UPDATE wechat_drafts SET publish_id = ?, publish_status = ?, article_url = ?,
                   updated_at = ? WHERE app_id = ? AND issue = ?""",
                (publish_id, status, url, now_iso(), app_id, issue),
            )
            if clear:
                conn.execute("DELETE FROM wechat_intents WHERE app_id = ? AND issue = ? AND step = ?",
                             (app_id, issue, clear))

    def draft(self, app_id: str, issue: str) -> dict:
        """The issue's draft: media_id, publish_id, publish_status, article_url (all None if none)."""
        row = self.db.connect().execute(
            "SELECT media_id, publish_id, publish_status, article_url FROM wechat_drafts "
            "WHERE app_id = ? AND issue = ?", (app_id, issue)).fetchone()
        if row is None:
            return {"media_id": None, "publish_id": None, "publish_status": None, "article_url": None}
        return dict(row)
