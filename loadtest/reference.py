"""The reference server (HANDLE.NET 7.3.1) as a load-test peer: a server directory made
from the jars' template, seeded offline with the load test's identifiers, and the command
line that runs it.

The jars are the user's (``--reference-jars DIR``: handle.jar and its dependencies);
nothing of them is copied here. The server reaches for the global Handle root on some
paths, so it only ever runs inside a loopback-only network namespace (loadtest/peer.py).

Seeding writes the server's own storage before it starts, with the storage class the
server itself picks from its config.dct (``HandleStorageFactory``): 100,000 identifiers
take seconds that way, where creating them over the protocol takes minutes.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from .keyspace import ENTERPRISES, handle, prefix_of_enterprise, values

# The 7.3.1 library derives DH session keys with KeyAgreement.generateSecret("DES"/"AES"),
# which Java 17 refuses unless this switch is on: without it the library's default write
# path fails on the client before any byte reaches a server, the reference server's too.
# (One copy: the interop tests import it from here.)
JAVA_FLAGS = ["-Djdk.crypto.KeyAgreement.legacyKDF=true"]

# The reference server's config.dct: loopback only, ports filled in, one
# administrator that is never used (the load only resolves).
CONFIG = """{
  "server_type" = "server"
  "hdl_udp_config" = {
    "bind_address" = "127.0.0.1"
    "num_threads" = "%(threads)d"
    "bind_port" = "%(port)d"
    "log_accesses" = "no"
  }
  "hdl_tcp_config" = {
    "bind_address" = "127.0.0.1"
    "num_threads" = "%(threads)d"
    "bind_port" = "%(port)d"
    "backlog" = "256"
    "log_accesses" = "no"
  }
  "no_udp_resolution" = "n"
  "interfaces" = (
    "hdl_udp"
    "hdl_tcp"
  )
  "server_config" = {
    "server_admins" = (
      "300:0.NA/88.166"
    )
    "replication_admins" = (
      "300:0.NA/88.166"
    )
    "max_session_time" = "86400000"
    "this_server_id" = "1"
    "max_auth_time" = "60000"
    "backup_admins" = (
      "300:0.NA/88.166"
    )
    "case_sensitive" = "no"
  }
}
"""

# Our own seeding driver (not the reference's code): reads lines
#   NA <tab> 0.NA/prefix                       (a prefix this server is home to)
#   handle <tab> timestamp <tab> (index <tab> type <tab> hexdata)*
# and writes them into the storage the server will open.
SEEDER = r"""
import java.io.*;
import java.nio.charset.StandardCharsets;
import net.cnri.util.StreamTable;
import net.handle.hdllib.*;
import net.handle.server.HandleStorageFactory;

public class SeedReference {
  public static void main(String[] args) throws Exception {
    File dir = new File(args[0]);
    StreamTable config = new StreamTable();
    config.readFromFile(new File(dir, "config.dct"));
    StreamTable serverConfig = (StreamTable) config.get("server_config");
    HandleStorage storage = HandleStorageFactory.getStorage(dir, serverConfig, true);
    int handles = 0, nas = 0;
    try (BufferedReader r = new BufferedReader(
        new InputStreamReader(new FileInputStream(args[1]), StandardCharsets.UTF_8))) {
      String line;
      while ((line = r.readLine()) != null) {
        String[] f = line.split("\t");
        if (f[0].equals("NA")) {
          storage.setHaveNA(Util.upperCase(Util.encodeString(f[1])), true);
          nas++;
          continue;
        }
        int ts = Integer.parseInt(f[1]);
        HandleValue[] vals = new HandleValue[(f.length - 2) / 3];
        for (int i = 0; i < vals.length; i++) {
          vals[i] = new HandleValue(Integer.parseInt(f[2 + 3 * i]),
              Util.encodeString(f[3 + 3 * i]), Util.encodeHexString(f[4 + 3 * i]));
          vals[i].setTimestamp(ts);
        }
        // case_sensitive "no": the server upper-cases a handle before it asks storage
        storage.createHandle(Util.upperCase(Util.encodeString(f[0])), vals);
        handles++;
      }
    }
    storage.checkpointDatabase();
    storage.shutdown();
    System.out.println("seeded " + handles + " handles, " + nas + " prefixes");
  }
}
"""


def missing(jars: Path) -> str | None:
    """Why the reference server cannot run here, or None."""
    if not (jars / "handle.jar").exists():
        return (
            f"no handle.jar in {jars} (give --reference-jars the folder of the HANDLE.NET "
            "7.3.1 jars, e.g. ../shared/clients/cnri-7.3.1)"
        )
    for tool in ("java", "javac"):
        if shutil.which(tool) is None:
            return (
                f"{tool} is not installed (a Java 17 JDK: apt-get install openjdk-17-jdk-headless)"
            )
    return None


def seed_lines(count: int) -> list[str]:
    """The seed file's lines: every enterprise prefix, then identifiers 0..count-1 with
    the values idnode's load-test registry holds (keyspace.values)."""
    out = [f"NA\t0.NA/{prefix_of_enterprise(e)}" for e in range(ENTERPRISES)]
    for i in range(count):
        vs = values(i)
        fields = [handle(i), str(vs[0].timestamp)]
        for v in vs:
            fields += [str(v.index), v.type, v.data.hex()]
        out.append("\t".join(fields))
    return out


def prepare(work: Path, jars: Path, count: int, port: int, threads: int = 15) -> Path:
    """A seeded server directory under ``work`` (its config, its storage); its path.

    The template's keys (privkey.bin, pubkey.bin, siteinfo) come from the jars' sibling
    ``cnri-server-template`` when there is one; the server signs nothing a resolution
    asks for, but will not start without a key pair."""
    server = work / "reference-server"
    server.mkdir(parents=True)
    template = jars.parent / "cnri-server-template"
    for name in ("privkey.bin", "pubkey.bin", "siteinfo.json", "contactdata.dct"):
        if (template / name).exists():
            shutil.copy(template / name, server / name)
            (server / name).chmod(0o644)
    if not (server / "privkey.bin").exists():
        raise RuntimeError(
            f"no server key pair: expected {template}/privkey.bin beside the jars "
            "(a directory made by the reference server's SimpleSetup)"
        )
    (server / "config.dct").write_text(CONFIG % {"port": port, "threads": threads})
    build = work / "reference-build"
    build.mkdir()
    (build / "SeedReference.java").write_text(SEEDER)
    javac = subprocess.run(
        [
            "javac",
            "-nowarn",
            "-d",
            str(build),
            "-cp",
            f"{jars}/*",
            str(build / "SeedReference.java"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if javac.returncode != 0:
        raise RuntimeError(f"javac SeedReference: {javac.stderr[-2000:]}")
    seed = work / "reference-seed.tsv"
    seed.write_text("\n".join(seed_lines(count)) + "\n", encoding="utf-8")
    p = subprocess.run(
        ["java", *JAVA_FLAGS, "-cp", f"{jars}/*:{build}", "SeedReference", str(server), str(seed)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        cwd=server,
    )
    if p.returncode != 0 or "seeded" not in p.stdout:
        raise RuntimeError(
            f"seeding the reference server failed: {p.stdout[-1000:]} {p.stderr[-3000:]}"
        )
    return server


def command(jars: Path, server: Path) -> list[str]:
    """The command line of the reference server on ``server`` (a prepared directory)."""
    return ["java", *JAVA_FLAGS, "-cp", f"{jars}/*", "net.handle.server.Main", str(server)]


def in_namespace() -> bool:
    """Whether this process runs in a namespace whose only interface is loopback."""
    # /proc/self/net/dev lists this process's namespace (/sys/class/net lists sysfs's)
    try:
        lines = Path("/proc/self/net/dev").read_text().splitlines()[2:]
    except OSError:
        return False
    return [line.split(":")[0].strip() for line in lines] == ["lo"]
