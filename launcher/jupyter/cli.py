"""`launcher jupyter` and its `stop` and `status`: what the launcher's command line loads."""

import re
from datetime import datetime, timezone

import click

from launcher import instances
from launcher.jupyter import connect, launch, lookup, owners, profile, say, start, tokens
from launcher.pricing import DEFAULT_INSTANCE_TYPE
from trainer import aws
from trainer.errors import GankitError, UsageError, aws_error, aws_setup_error, echo, one_line, printable
from trainer.progress import format_duration


def region() -> str:
    from launcher import settings

    return aws.region(settings.get("region"))


@click.group(invoke_without_command=True)
@click.option("--instance-type", default=None,
              help=f"EC2 GPU instance type for a new instance (default: {DEFAULT_INSTANCE_TYPE['ec2']}; "
                   "an existing one keeps its type unless given).")
@click.option("--idle", default="60m", show_default=True,
              help="Stop the instance after this long (e.g. 2h, 90m, 3600 seconds) with no kernel or terminal "
                   "activity, no file saved in the folder Jupyter serves and no GPU use; fixed at launch.")
@click.option("--max-hours", type=float, default=8.0, show_default=True,
              help="Stop the instance after this many hours up, whatever happens; fixed at launch.")
@click.option("--ssh", "use_ssh", is_flag=True,
              help="Tunnel over SSH (a temporary rule for your own /32) instead of SSM.")
@click.option("--my-ip", default=None, help="Your public IPv4 address for --ssh (default: asked of checkip.amazonaws.com).")
@click.option("--local-port", type=click.IntRange(1, 65535), default=connect.PORT, show_default=True,
              help="Port on this machine the tunnel listens on.")
@click.option("--open", "open_browser", is_flag=True, help="Open Jupyter in your browser.")
@click.pass_context
def jupyter(ctx, instance_type, idle, max_hours, use_ssh, my_ip, local_port, open_browser):
    """Start (or reuse) your Jupyter GPU instance and connect to it privately.

    Prints http://localhost:8888/lab?token=... once Jupyter answers. The instance stops
    itself after --idle without use and after --max-hours regardless; `launcher jupyter
    stop` stops it now, `launcher jupyter status` shows what it has cost so far.
    """
    if ctx.invoked_subcommand:  # `launcher jupyter --ssh stop` once stopped the instance and ignored --ssh
        given = [p.opts[0] for p in ctx.command.params
                 if ctx.get_parameter_source(p.name) is click.core.ParameterSource.COMMANDLINE]
        if given:
            one = len(given) == 1
            raise UsageError(f"{', '.join(given)} {'is an option' if one else 'are options'} of `launcher jupyter` "
                             f"itself (starting Jupyter), not of `launcher jupyter {ctx.invoked_subcommand}`; drop "
                             f"{'it' if one else 'them'}")
        return
    from launcher import tunnel
    from launcher.durations import parse_duration
    from launcher.pricing import check_instance_type

    if instance_type:
        check_instance_type(instance_type, "ec2")
    idle_seconds = parse_duration(idle, flag="--idle")
    if idle_seconds < 60:
        raise UsageError(f"--idle {idle} is too short to work in; give at least 1m, e.g. --idle 60m")
    if not 0 < max_hours <= 24 * 7:
        raise UsageError(f"--max-hours {max_hours:g} is out of range; give 0-168 hours, e.g. --max-hours 8")
    # Check the local tools before anything that bills.
    tunnel.check_ssh_tools() if use_ssh else tunnel.check_ssm_tools()
    tunnel.check_local_port(local_port)
    if use_ssh and my_ip:
        tunnel.my_ip(my_ip)  # a bad --my-ip fails now, not after the instance is up

    region_name = region()
    ec2, ssm = instances.client("ec2", region_name), instances.client("ssm", region_name)
    who = owners.owner(region_name)
    launch.configured_bucket()  # a missing or unsafe bucket setting, before a token or an instance exists
    from launcher import settings

    # No profile (Jupyter's own, or the training one it falls back on) or security group: said before any upload.
    jupyter_profile = profile.jupyter_profile()
    instances.check_settings(settings.effective(), jupyter_profile)
    if jupyter_profile is None:
        say(profile.OLD_STACK_NOTE)
    iid, token, started = start.start_or_reuse(ec2, ssm, region_name, who, instance_type, idle_seconds, max_hours)
    try:
        instance = start.wait_running(ec2, iid)
    except KeyboardInterrupt as e:  # Ctrl-C, SIGTERM or SIGHUP: the instance goes on starting, so say what then
        from trainer.errors import Interrupted, interrupt_name

        raise Interrupted(f"stopped waiting for {iid} on {interrupt_name(e)}; it goes on starting and "
                          f"stops itself after {_idle_limit(ec2, iid, idle, idle_seconds)} unused: `launcher jupyter` "
                          "connects to it, `launcher jupyter stop` stops it now", e) from None
    except Exception as e:  # AWS out of reach, or the credentials expired, while the instance starts (and bills)
        if isinstance(e, GankitError) or aws_error(e) is None:
            raise
        after = (f"{iid} goes on starting and stops itself after {_idle_limit(ec2, iid, idle, idle_seconds)} unused: "
                 "`launcher jupyter` connects to it, `launcher jupyter stop` stops it now")
        setup = aws_setup_error(e)
        raise (UsageError(f"{setup}; {after}") if setup else
               GankitError(f"lost sight of {iid} while waiting for it to run ({one_line(e)}); {after}")) from None
    connect.connect(ec2, region_name, who, instance, token, local_port, use_ssh, my_ip, open_browser, started)


def _idle_limit(ec2, iid, idle: str, idle_seconds: float) -> str:
    """The idle limit `iid` stops itself at: the one it was launched with (a reused or restarted instance keeps
    its own, whatever --idle says now); --idle when its tags cannot be read."""
    try:
        [reservation] = ec2.describe_instances(InstanceIds=[iid])["Reservations"]
        own = lookup.tags_of(reservation["Instances"][0]).get(lookup.TAG_IDLE)
    except Exception:  # only a detail of the message: never a traceback in its place
        return idle
    return idle if own in (None, str(int(idle_seconds))) else format_duration(float(own))


@jupyter.command()
@click.option("--terminate", is_flag=True, help="Delete the instance and its disk too (a stopped one still bills its disk).")
def stop(terminate):
    """Stop your Jupyter instance now."""
    region_name = region()
    ec2 = instances.client("ec2", region_name)
    who = owners.owner(region_name)
    instance = lookup.find_instance(ec2, who)
    if instance is None:
        found = lookup.found_elsewhere(region_name, who)
        if found:
            raise UsageError(f"no Jupyter instance in {region_name} to stop; {lookup.elsewhere_line(region_name, found)}")
        say("no Jupyter instance to stop")
        lookup.say_legacy_instance(ec2, region_name)
        return
    iid = instance["InstanceId"]
    if terminate:
        instances.terminate(iid, region_name)
        ssm = instances.client("ssm", region_name)
        try:
            ssm.delete_parameter(Name=tokens.token_parameter(who))
        except ssm.exceptions.ParameterNotFound:
            pass
        except Exception as e:  # the instance is gone all the same: the line says so, not AWS's alone
            if aws_error(e) is None:
                raise
            setup = aws_setup_error(e)
            after = f"terminated {iid}, but could not delete its token {tokens.token_parameter(who)}"
            raise (UsageError(f"{after}: {setup}") if setup else GankitError(f"{after}: {one_line(e)}")) from None
        say(f"terminating {iid} and deleting its token")
    elif instance["State"]["Name"] in ("stopping", "stopped"):
        say(f"{iid} is already {instance['State']['Name']}")
    else:
        instances.stop_instance(iid, region_name)
        say(f"stopping {iid}; `launcher jupyter` starts it again")


@jupyter.command()
def status():
    """Show the state, uptime and cost so far of your Jupyter instance."""
    from launcher.pricing import price_per_hour

    region_name = region()
    ec2 = instances.client("ec2", region_name)
    who = owners.owner(region_name)
    instance = lookup.find_instance(ec2, who)
    if instance is None:
        found = lookup.found_elsewhere(region_name, who)
        echo(f"no Jupyter instance in {region_name}; {lookup.elsewhere_line(region_name, found)}" if found else
             "no Jupyter instance; `launcher jupyter` starts one")
        lookup.say_legacy_instance(ec2, region_name)
        return
    state, kind = instance["State"]["Name"], instance["InstanceType"]
    tags = lookup.tags_of(instance)
    echo(f"instance   {instance['InstanceId']} ({kind})")
    echo(f"state      {state}")
    if state in ("pending", "running"):
        # LaunchTime is the time of the latest start, so this is this session's uptime.
        up = (datetime.now(timezone.utc) - instance["LaunchTime"]).total_seconds()
        rate = price_per_hour(kind, False)
        echo(f"uptime     {format_duration(up)}")
        echo(f"cost       ${rate * up / 3600:.2f} so far this start (${rate:.2f}/h on demand)")
    idle = tags.get(lookup.TAG_IDLE, "")  # a tag removed or edited by hand: "?", not "0s" or a traceback
    idle = format_duration(float(idle)) if re.fullmatch(r"\d+", idle) else "?"
    echo(f"limits     stops after {idle} idle or {printable(tags.get(lookup.TAG_MAX_HOURS, '?'))} h up")
    if state == "stopped":
        echo("           stopped: only its disk bills; `launcher jupyter` starts it, "
             "`launcher jupyter stop --terminate` deletes it")
