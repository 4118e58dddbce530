"""Maven feed: ``mvn deploy:deploy-file`` (WebDAV PUT) and a pom build resolving the deployed artifact.

The token sits in settings.xml as a ``<server>`` password, as users configure ProGet. Maven's plugins
come from the machine's ~/.m2 cache (Maven Central is unreachable), so the plugin versions are pinned
to cached ones; the test artifact's group is removed from ~/.m2 before and after, so every resolution
really goes through the gateway.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.feeds import artifacts, tools
from tests.feeds.conftest import (
    TOKEN_DEV,
    TOKEN_OUTSIDER,
    FeedGateway,
    assert_front_saw_only_the_key,
    assert_refused_unseen,
)
from tests.feeds.front import FEEDS, Front

FEED = FEEDS["maven"]
GROUP, ARTIFACT, VERSION = "com.proxytest.feeds", "feeds-demo", "1.0.0"
LOCAL_GROUP = tools.REAL_HOME / ".m2" / "repository" / "com" / "proxytest" / "feeds"
DEPLOY_PLUGIN = "org.apache.maven.plugins:maven-deploy-plugin:3.1.1:deploy-file"

CONSUMER_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>com.proxytest.consumer</groupId><artifactId>consumer</artifactId><version>0.0.1</version>
  <properties><maven.compiler.source>11</maven.compiler.source><maven.compiler.target>11</maven.compiler.target>
    <project.build.sourceEncoding>UTF-8</project.build.sourceEncoding></properties>
  <repositories><repository><id>proget</id><url>{url}</url></repository></repositories>
  <dependencies><dependency><groupId>{group}</groupId><artifactId>{artifact}</artifactId><version>{version}</version></dependency></dependencies>
  <build><pluginManagement><plugins>
    <plugin><groupId>org.apache.maven.plugins</groupId><artifactId>maven-resources-plugin</artifactId><version>3.3.1</version></plugin>
    <plugin><groupId>org.apache.maven.plugins</groupId><artifactId>maven-compiler-plugin</artifactId><version>3.13.0</version></plugin>
  </plugins></pluginManagement></build>
</project>
"""


def settings(path: Path, token: str) -> Path:
    path.write_text(
        "<settings><servers><server><id>proget</id><username>api</username>"
        f"<password>{token}</password></server></servers></settings>\n"
    )
    return path


def mvn(args: list[str], settings_xml: Path, cwd: Path) -> tools.Result:
    env = tools.clean_env(tools.REAL_HOME, MAVEN_OPTS="-Xmx512m")  # the real HOME: ~/.m2 holds the plugins
    return tools.run([tools.tool("mvn"), "-B", "-s", str(settings_xml), *args], env=env, cwd=cwd, timeout=300)


def feed_url(gateway: FeedGateway) -> str:
    return f"{gateway.url}/maven2/{FEED}"


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory, front: Front, gateway: FeedGateway) -> Iterator[Path]:
    tmp = tmp_path_factory.mktemp("maven")
    shutil.rmtree(LOCAL_GROUP, ignore_errors=True)
    jar = artifacts.jar(tmp / f"{ARTIFACT}.jar")
    mark = front.mark()
    args = [DEPLOY_PLUGIN, f"-Dfile={jar}", f"-DgroupId={GROUP}", f"-DartifactId={ARTIFACT}"]
    args += [f"-Dversion={VERSION}", "-Dpackaging=jar", "-DrepositoryId=proget", f"-Durl={feed_url(gateway)}"]
    tools.ok(mvn(args, settings(tmp / "settings.xml", TOKEN_DEV), tmp))
    lines = assert_front_saw_only_the_key(front, mark)
    stored = front.feed_dir("maven", "maven2") / "com" / "proxytest" / "feeds" / ARTIFACT / VERSION
    assert (stored / f"{ARTIFACT}-{VERSION}.jar").read_bytes() == jar.read_bytes()
    assert any(line["method"] == "PUT" and line["uri"].endswith(".pom") for line in lines)
    try:
        yield tmp
    finally:
        shutil.rmtree(LOCAL_GROUP, ignore_errors=True)


def consumer(directory: Path, gateway: FeedGateway) -> Path:
    directory.mkdir(parents=True)
    url = feed_url(gateway)
    (directory / "pom.xml").write_text(
        CONSUMER_POM.format(url=url, group=GROUP, artifact=ARTIFACT, version=VERSION)
    )
    source = directory / "src" / "main" / "java" / "demo"
    source.mkdir(parents=True)
    (source / "Main.java").write_text(
        "package demo; public class Main { public static void main(String[] a) {} }\n"
    )
    return directory


def test_deploy_file_puts_the_artifact_in_the_feed(deployed: Path) -> None:
    assert (deployed / "settings.xml").is_file()


def test_a_pom_build_resolves_the_deployed_artifact(
    deployed: Path, front: Front, gateway: FeedGateway, tmp_path: Path
) -> None:
    shutil.rmtree(LOCAL_GROUP, ignore_errors=True)
    gw_mark, mark = gateway.mark(), front.mark()
    tools.ok(
        mvn(["compile"], settings(tmp_path / "settings.xml", TOKEN_DEV), consumer(tmp_path / "app", gateway))
    )
    assert (LOCAL_GROUP / ARTIFACT / VERSION / f"{ARTIFACT}-{VERSION}.jar").is_file()
    uris = {line["uri"] for line in assert_front_saw_only_the_key(front, mark)}
    assert f"/maven2/{FEED}/com/proxytest/feeds/{ARTIFACT}/{VERSION}/{ARTIFACT}-{VERSION}.jar" in uris
    audit = gateway.since(gw_mark)
    # Maven asks without credentials first; the gateway's Basic challenge makes it send the token.
    assert any(line["reason"] == "credential_missing" and line["status"] == 401 for line in audit), audit
    assert all(line["client"] in ("dev", None) for line in audit), audit


def test_a_token_without_a_rule_for_the_feed_is_refused_and_never_forwarded(
    deployed: Path, front: Front, gateway: FeedGateway, tmp_path: Path
) -> None:
    shutil.rmtree(LOCAL_GROUP, ignore_errors=True)
    rc = settings(tmp_path / "settings.xml", TOKEN_OUTSIDER)
    gw_mark, mark = gateway.mark(), front.mark()
    tools.failed(mvn(["compile"], rc, consumer(tmp_path / "app", gateway)))
    jar = artifacts.jar(tmp_path / "x.jar")
    args = [
        DEPLOY_PLUGIN,
        f"-Dfile={jar}",
        f"-DgroupId={GROUP}",
        "-DartifactId=outsider",
        f"-Dversion={VERSION}",
    ]
    tools.failed(
        mvn([*args, "-Dpackaging=jar", "-DrepositoryId=proget", f"-Durl={feed_url(gateway)}"], rc, tmp_path)
    )
    assert_refused_unseen(front, mark, gateway, gw_mark, "outsider")
    # Maven's PUT carries 'Expect: 100-continue'; refused before its body was sent, the connection must
    # not be reused as if the body had arrived (Maven's next request would be misread as that body).
    assert all(line["reason"] != "framing_invalid" for line in gateway.since(gw_mark)), gateway.since(gw_mark)
    assert not (LOCAL_GROUP / ARTIFACT / VERSION / f"{ARTIFACT}-{VERSION}.jar").exists()
