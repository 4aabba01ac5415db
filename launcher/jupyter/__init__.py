"""`launcher jupyter`: your own Jupyter on a GPU instance, reachable only by you.

The instance is found by its tags (one per AWS identity), started or launched as needed,
and stops itself when idle (see `launcher.remote.idle_check`). Jupyter listens on the
instance's loopback with a token kept in SSM; the launcher reaches it through an SSM
port-forwarding session, or an SSH tunnel with `--ssh`.

    cli        the command and its stop and status (what `launcher` loads)
    owners     whose instance: the owner name of the caller's AWS identity
    tokens     the token's SSM parameter, readable by the owner's instance alone
    lookup     the caller's instance: by its tags here, by the bucket's note in another region
    profile    the instance's IAM profile (Jupyter's own, not the training instances')
    launch     a new instance, its wheel and notebook staged
    start      reuse, start or launch one, and wait for it to run
    ssh_rules  the temporary SSH rule of --ssh, and older launchers' rules
    connect    the tunnel to Jupyter and its URL
"""

from trainer.errors import echo


def say(message):
    try:
        echo(message, err=True)  # progress on stderr; stdout carries only the URL
    except OSError:
        pass  # a closed terminal (SIGHUP) must not stop the clean-up that follows
