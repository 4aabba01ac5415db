"""Start Jupyter on the instance: loopback only, with the token kept in SSM.

    python -m launcher.remote.jupyter_start --token-parameter /gankit/jupyter/alice/token \
        --root-dir /home/ubuntu/gankit [--region us-east-1] [--port 8888]

The token is read from an SSM SecureString (the launcher writes a fresh one before
each start) and goes only into a private config file, never on a command line (`ps`
shows those to everyone) or in a log. Then this process becomes the Jupyter server,
so systemd supervises Jupyter itself.
"""

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from trainer.fsutil import atomic_write_text

PORT = 8888


class TokenUnavailable(Exception):
    pass


def read_token(parameter: str, region: str | None = None) -> str:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        ssm = boto3.client("ssm", region_name=region)
        return ssm.get_parameter(Name=parameter, WithDecryption=True)["Parameter"]["Value"]
    except (BotoCoreError, ClientError) as e:
        raise TokenUnavailable(f"cannot read Jupyter's token from SSM parameter {parameter}: {e}") from None


def server_config(token: str, root_dir, port: int = PORT, allow_root: bool = False) -> dict:
    """The settings that keep Jupyter private: reachable only through the tunnel, only with the token."""
    return {
        "ServerApp": {
            "ip": "127.0.0.1",  # the SSM/SSH tunnel ends on the instance's loopback
            "port": port,
            "port_retries": 0,  # the tunnel forwards exactly this port; fail rather than move
            "open_browser": False,
            "allow_origin": "",  # no cross-origin requests
            "allow_remote_access": False,
            "root_dir": str(root_dir),
            "allow_root": allow_root,
            # Kernels are the activity the idle check watches; culling is its job, not Jupyter's.
        },
        # Set from config, the token is never printed in Jupyter's startup URLs.
        "IdentityProvider": {"token": token},
    }


def write_config(config_dir, config: dict) -> Path:
    """Write jupyter_server_config.json readable by its owner only."""
    config_dir = Path(config_dir)
    config_dir.mkdir(parents=True, exist_ok=True)
    config_dir.chmod(0o700)
    path = config_dir / "jupyter_server_config.json"
    atomic_write_text(path, json.dumps(config, indent=1), mode=0o600)
    return path


def server_command(python: str = sys.executable) -> list[str]:
    """JupyterLab when installed (the instance), else the bare Jupyter server."""
    try:
        import jupyterlab  # noqa: F401

        return [python, "-m", "jupyterlab"]
    except ImportError:
        return [python, "-m", "jupyter_server"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="jupyter_start", description=__doc__.split("\n\n")[0])
    p.add_argument("--token-parameter", required=True, help="SSM SecureString holding the token")
    p.add_argument("--region", default=None)
    p.add_argument("--root-dir", required=True, help="folder Jupyter serves (holds the example notebook)")
    p.add_argument("--port", type=int, default=PORT)
    p.add_argument("--config-dir", default=None, help="default: ~/.gankit-jupyter")
    p.add_argument("--allow-root", action="store_true",
                   help="for containers and tests; the instance runs Jupyter as the ubuntu user")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    root = Path(args.root_dir)
    root.mkdir(parents=True, exist_ok=True)
    config_dir = Path(args.config_dir or Path.home() / ".gankit-jupyter")
    try:
        token = read_token(args.token_parameter, args.region)
    except TokenUnavailable as e:
        sys.exit(f"gankit: {e}")
    write_config(config_dir, server_config(token, root, args.port, args.allow_root))
    # Our config directory is read last, so its settings win over any other Jupyter config.
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(config_dir))
    env.pop("JUPYTER_TOKEN", None)
    env.pop("JUPYTER_TOKEN_FILE", None)
    command = server_command()
    print(f"starting {' '.join(command[1:])} on 127.0.0.1:{args.port}, serving {root}", flush=True)
    os.execvpe(shutil.which(command[0]) or command[0], command, env)


if __name__ == "__main__":
    main()
