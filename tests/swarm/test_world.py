"""The Swarm test world itself (tests/swarm/README.md): what the other swarm tests rely on, checked once."""

from __future__ import annotations

import ipaddress
import subprocess
import urllib.request

import docker

SOCKET = "unix:///run/fs-swarm/docker.sock"
ALLOWED = ipaddress.ip_network("198.18.0.0/15")


def test_a_single_node_swarm_whose_networks_stay_in_198_18(swarm_stack):
    client = docker.DockerClient(base_url=SOCKET)
    try:
        info = client.info()
        assert info["Swarm"]["LocalNodeState"] == "active"
        assert info["Swarm"]["NodeAddr"] == "198.18.0.1"
        subnets = {
            network.name: [ipaddress.ip_network(config["Subnet"]) for config in (network.attrs.get("IPAM") or {}).get("Config") or []]
            for network in client.networks.list()
        }
        assert subnets["docker_gwbridge"] == [ipaddress.ip_network("198.18.64.0/24")]
        assert all(subnet.subnet_of(ALLOWED) for found in subnets.values() for subnet in found), subnets
        services = sorted(s.name for s in client.services.list(filters={"label": "com.docker.stack.namespace=fs"}))
        assert services == ["fs_backend", "fs_frontend", "fs_nginx", "fs_postgres", "fs_python-worker", "fs_redis"]
    finally:
        client.close()


def test_the_services_answer_on_the_machines_loopback_through_the_forwarders(swarm_stack):
    with urllib.request.urlopen("http://127.0.0.1:57080/api/health", timeout=5) as answer:
        assert b'"service":"backend"' in answer.read()
    # The main engine knows nothing of it: no container of stack fs there.
    assert subprocess.run(["docker", "ps", "-q", "--filter", "label=com.docker.stack.namespace=fs"],
                          capture_output=True, text=True, check=True).stdout == ""
