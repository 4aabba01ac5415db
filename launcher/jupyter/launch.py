"""Launch a new Jupyter instance: stage the project's wheel and notebook, run it, and bind its token to it."""

import hashlib
import secrets
from pathlib import Path

from launcher import instances
from launcher.jupyter import lookup, profile, tokens
from trainer.errors import GankitError, UsageError, aws_error, one_line


def configured_bucket() -> str:
    """The user's bucket (NAME or NAME/PREFIX) from the settings, checked: it reaches the instance's setup."""
    from launcher import settings

    bucket = settings.get("bucket")
    if not bucket:
        raise UsageError("no bucket configured: run `launcher infra up` first")
    settings.check_bucket(bucket, "the bucket setting (GANKIT_BUCKET or `launcher config`)")
    return bucket.removeprefix("s3://").rstrip("/")


def stage_project(root: str, who: str) -> tuple[str, str, str, str]:
    """Upload the project's wheel and the example notebook where the instance fetches them;
    (wheel URI, its sha256, notebook URI, its sha256). The instance takes each only if it still matches."""
    from launcher.jupyter_userdata import NOTEBOOK
    from launcher.resources import resource_path
    from trainer import layout, s3

    notebook = resource_path(f"examples/{NOTEBOOK}")
    prefix = layout.join(root, "jupyter", who)
    wheel_uri, wheel_sha256 = instances.upload_wheel(prefix)
    notebook_uri = layout.join(prefix, NOTEBOOK)
    data = Path(notebook).read_bytes()  # the bytes hashed are the bytes sent
    s3.write_bytes(notebook_uri, data)
    return wheel_uri, wheel_sha256, notebook_uri, hashlib.sha256(data).hexdigest()


def launch(ssm, region_name, who, instance_type, idle_seconds, max_hours) -> str:
    """Launch the instance and let it alone read its token; the new instance's id."""
    from launcher import settings
    from launcher import jupyter_userdata

    config = {**settings.effective(), "region": region_name}
    bucket = configured_bucket()
    wheel_uri, wheel_sha256, notebook_uri, notebook_sha256 = stage_project(f"s3://{bucket}", who)
    boot = jupyter_userdata.JupyterBoot(
        token_parameter=tokens.token_parameter(who), region=region_name, wheel_uri=wheel_uri,
        wheel_sha256=wheel_sha256, notebook_uri=notebook_uri, notebook_sha256=notebook_sha256, bucket=bucket,
        idle_seconds=int(idle_seconds), max_hours=max_hours)
    tags = {lookup.TAG_OWNER: who, "Name": f"gankit-jupyter-{who}",
            lookup.TAG_IDLE: str(int(idle_seconds)), lookup.TAG_MAX_HOURS: f"{max_hours:g}"}
    # The client token: EC2 starts one instance however often botocore resends a request whose reply was lost.
    client_token = f"gankit-{secrets.token_hex(16)}"
    request = instances.run_instances_request(lookup.PURPOSE, instance_type, jupyter_userdata.render(boot), spot=False,
                                              tags=tags, settings=config, shutdown="stop", client_token=client_token,
                                              profile=profile.jupyter_profile())
    iid = None
    try:
        iid = instances.launch(request, region_name)
        # The instance boots for minutes before it reads the token: time enough to bind it.
        tokens.bind_token(ssm, region_name, who, iid)
        return iid
    except BaseException as e:  # Ctrl-C too: an instance that cannot read its token would bill for nothing
        if iid is None and isinstance(e, GankitError) and not isinstance(e, instances.LaunchUnanswered):
            raise  # EC2 said no: nothing started
        raise _launch_failure(e, iid, _abandon_launch(client_token, region_name, iid)) from None


def _launch_failure(e: BaseException, iid: str | None, after: str) -> GankitError:
    """The one line for a launch stopped once RunInstances was sent; `after` says what became of the instance."""
    if isinstance(e, KeyboardInterrupt):  # Ctrl-C, SIGTERM or SIGHUP: exit 128 + the signal
        from trainer.errors import Interrupted, interrupt_name

        return Interrupted(f"stopped by {interrupt_name(e)} while launching the instance{after}", e)
    if iid:
        return GankitError(f"could not let {iid} read its token ({one_line(aws_error(e) or e)}){after}")
    return GankitError(f"{e if isinstance(e, GankitError) else f'launching the instance failed: {one_line(e)}'}{after}")


def _abandon_launch(client_token, region_name, iid=None) -> str:
    """The launch did not complete, so EC2 may have started an instance that cannot serve Jupyter (its token not
    bound to it): terminate `iid`, or what the launch with `client_token` started when its id never came.
    What the user should know, as the end of the line: what became of it, or its id and how to delete it."""
    maybe = ((f"; {iid} may still run" if iid else "; it may have started an instance all the same")
             + ": `launcher jupyter status` shows it, `launcher jupyter stop --terminate` deletes it")
    try:
        launched = [iid] if iid else instances.find_launched(client_token, region_name)
        for each in launched:
            instances.terminate(each, region_name)
    except KeyboardInterrupt:  # a second Ctrl-C: the clean-up is cut short, the line still says what may be left
        return maybe
    except Exception as e:
        return f"; could not terminate {iid or 'what it started'} either ({one_line(aws_error(e) or e)}){maybe}"
    # DescribeInstances is eventually consistent: one not listed yet may still have started.
    return f"; terminated {', '.join(launched)}, which it had started; run `launcher jupyter` again" if launched else maybe
