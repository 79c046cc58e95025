"""Generate the demo shop's files: product media, configuration with secrets, Nginx site.

Media are random bytes behind a JPEG header, so they do not compress, like real photos.
Sizes follow a log-normal spread around 250 KiB. Everything is seeded: the same seed
makes the same site.
"""

from __future__ import annotations

import os
import random
import subprocess
from dataclasses import dataclass
from pathlib import Path

JPEG_HEADER = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
SCENTS = ["vanilla", "lavender", "sandalwood", "cedar", "rose", "citrus", "pine", "amber"]
SHAPES = ["pillar", "jar", "taper", "tin", "votive"]


@dataclass(frozen=True)
class DemoSite:
    root: Path  # stands in for the server's "/"

    @property
    def app(self) -> Path:
        return self.root / "var/www/candle-ecommerce"

    @property
    def media(self) -> Path:
        return self.app / "public/media"

    @property
    def nginx_enabled(self) -> Path:
        return self.root / "etc/nginx/sites-enabled"

    @property
    def config_files(self) -> list[Path]:
        return [
            self.app / ".env.local",
            self.app / "server/.env",
            self.root / "etc/nginx/sites-available/candle-ecommerce",
        ]


def generate(root: Path, *, media_files: int = 300, seed: int = 2026) -> DemoSite:
    site = DemoSite(root)
    rng = random.Random(seed)
    _media(site, rng, media_files)
    _config(site, rng)
    _code(site)
    return site


def _media(site: DemoSite, rng: random.Random, count: int) -> None:
    for i in range(count):
        scent, shape = rng.choice(SCENTS), rng.choice(SHAPES)
        folder = site.media / "products" / scent
        folder.mkdir(parents=True, exist_ok=True)
        size = int(min(max(rng.lognormvariate(12.4, 0.8), 8_000), 4_000_000))
        path = folder / f"{shape}-{i:04d}.jpg"
        path.write_bytes(JPEG_HEADER + rng.randbytes(size - len(JPEG_HEADER)))
    thumbs = site.media / "thumbnails"
    thumbs.mkdir(parents=True, exist_ok=True)
    for i in range(count // 3):
        (thumbs / f"thumb-{i:04d}.webp").write_bytes(
            b"RIFF" + rng.randbytes(rng.randint(3_000, 20_000))
        )
    (site.media / "uploads").mkdir(exist_ok=True)  # empty for now: kept as an empty dir


def _secret(rng: random.Random, n: int = 32) -> str:
    return "".join(
        rng.choice("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
        for _ in range(n)
    )


def _config(site: DemoSite, rng: random.Random) -> None:
    env_local, server_env, nginx = site.config_files
    env_local.parent.mkdir(parents=True, exist_ok=True)
    env_local.write_text(
        "NEXT_PUBLIC_SITE_URL=https://candles.example.com\n"
        f"NEXT_PUBLIC_STRIPE_KEY=pk_live_{_secret(rng, 24)}\n"
        f"SESSION_SECRET={_secret(rng)}\n"
    )
    server_env.parent.mkdir(parents=True, exist_ok=True)
    server_env.write_text(
        "NODE_ENV=production\nPORT=5000\n"
        "MONGODB_URI=mongodb://localhost:27017/candle-ecommerce\n"
        f"JWT_SECRET={_secret(rng, 48)}\n"
        f"STRIPE_SECRET_KEY=sk_live_{_secret(rng, 24)}\n"
        f"SMTP_PASSWORD={_secret(rng, 20)}\n"
    )
    for path in (env_local, server_env):
        os.chmod(path, 0o600)
    nginx.parent.mkdir(parents=True, exist_ok=True)
    nginx.write_text(
        "server {\n"
        "    listen 443 ssl http2;\n"
        "    server_name candles.example.com;\n"
        "    root /var/www/candle-ecommerce/public;\n"
        "    location /api/ { proxy_pass http://127.0.0.1:5000; }\n"
        "    location /media/ { expires 30d; }\n"
        "}\n"
    )
    enabled = nginx.parent.parent / "sites-enabled"
    enabled.mkdir(exist_ok=True)
    link = enabled / "candle-ecommerce"
    if not link.is_symlink():
        link.symlink_to("../sites-available/candle-ecommerce")


_GIT_ENV = {
    "GIT_AUTHOR_NAME": "Candle Dev",
    "GIT_AUTHOR_EMAIL": "dev@candles.example.com",
    "GIT_COMMITTER_NAME": "Candle Dev",
    "GIT_COMMITTER_EMAIL": "dev@candles.example.com",
    "GIT_AUTHOR_DATE": "2026-01-05T10:00:00Z",
    "GIT_COMMITTER_DATE": "2026-01-05T10:00:00Z",
}


def _code(site: DemoSite) -> None:
    """The application's git repository: a few commits, a release tag, a feature branch.

    Like the real one it ignores secrets and media, which the other sources back up.
    """
    app = site.app

    def git(*args: str) -> None:
        subprocess.run(
            ["git", "-C", str(app), *args],
            check=True,
            capture_output=True,
            env={**os.environ, **_GIT_ENV},
        )

    git("init", "-q", "-b", "main")
    (app / ".gitignore").write_text(".env.local\nserver/.env\npublic/media/\nnode_modules/\n")
    (app / "package.json").write_text('{"name": "candle-ecommerce", "version": "1.0.0"}\n')
    (app / "server" / "index.js").write_text("require('./app').listen(process.env.PORT);\n")
    git("add", ".")
    git("commit", "-q", "-m", "Shop: first release")
    git("tag", "-a", "v1.0.0", "-m", "release 1.0.0")
    git("checkout", "-q", "-b", "feature/gift-cards")
    (app / "server" / "giftcards.js").write_text("module.exports = () => [];\n")
    git("add", ".")
    git("commit", "-q", "-m", "Gift cards: skeleton")
    git("checkout", "-q", "main")
