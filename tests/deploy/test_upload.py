"""What `gammaface submit` uploads with a job: a planted checkout zipped the way Ray's job
client zips a working directory (its own packaging function, with the job's excludes), listed."""

import os
import zipfile
from pathlib import Path

from ray._private.runtime_env.packaging import create_package

from gammaface.commands import submit

KEPT = ["gammaface/__init__.py", "gammaface/data/synthfaces.py", "jobs/demo.yaml", "README.md",
        "notes/key_points.md", "requirements.lock", "tests/data/fixtures.py"]
SECRET = [".env", "deploy/.env.prod", "certs/server.pem", "certs/tls.key", ".ssh/id_rsa",
          "home/id_ed25519.pub", ".aws/credentials", ".kube/config", ".netrc",
          "gcp/credentials-prod.json", "sa/my-service-account.json", ".git-credentials",
          ".mlflow/credentials", ".pypirc", ".npmrc", ".s3cfg", ".boto", ".databrickscfg",
          ".vault-token", "kaggle.json", "rclone.conf", "secrets.yaml", "infra/prod.tfvars",
          ".bash_history", ".zsh_history", ".python_history"]
BULK = ["data/ffhq/00000.png", "venv/bin/python", ".venv-gpu/bin/python", "runs/demo/x.json"]


def _uploaded(tree: Path, tmp: Path) -> set[str]:
    env = submit.runtime_env(str(tree), None)
    package = tmp / "package.zip"
    create_package(env["working_dir"], package, include_gitignore=True, excludes=env["excludes"])
    with zipfile.ZipFile(package) as z:
        return {n for n in z.namelist() if not n.endswith("/")}


def test_the_upload_leaves_secrets_data_environments_and_links_out_of_the_tree(tmp_path):
    tree = tmp_path / "checkout"
    for rel in KEPT + SECRET + BULK:
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_text("x")
    outside = tmp_path / "home"
    (outside / ".aws").mkdir(parents=True)
    (outside / ".aws" / "credentials").write_text("aws_secret_access_key = real")
    (outside / "token.txt").write_text("real")
    os.symlink(outside / ".aws", tree / "notes" / "cloud")  # a folder link out of the tree
    os.symlink(outside / "token.txt", tree / "jobs" / "extra.yaml")  # a file link out of it
    os.symlink(tree / "README.md", tree / "notes" / "readme.md")  # a link inside it stays

    uploaded = _uploaded(tree, tmp_path)
    assert set(KEPT) | {"notes/readme.md"} <= uploaded
    assert not uploaded & set(SECRET), uploaded & set(SECRET)
    assert not uploaded & set(BULK), uploaded & set(BULK)
    assert not [n for n in uploaded if n.startswith("notes/cloud") or n == "jobs/extra.yaml"]
