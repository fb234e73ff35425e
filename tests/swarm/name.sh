# The swarm test world's names (source this file; bash only): one per machine. See README.md beside this file.
SWARM_NETNS=fs-swarm                        # the network namespace the swarm engine lives in
SWARM_NETNS_PATH=/var/run/netns/$SWARM_NETNS
SWARM_RUN=/run/fs-swarm                     # its socket, pid file, exec root and the forwarders' sockets
SWARM_LIB=/var/lib/fs-swarm                 # its data root and the stack's rendered services/ folder
SWARM_SOCKET=$SWARM_RUN/docker.sock
SWARM_DOCKER_HOST=unix://$SWARM_SOCKET
SWARM_STACK=fs                              # the stack's namespace (com.docker.stack.namespace)
SWARM_ADDRESS=198.18.0.1                    # the veth address swarm advertises; 198.18.0.0/15, not a private range
SWARM_GWBRIDGE_SUBNET=198.18.64.0/24
SWARM_ADDR_POOL=198.18.128.0/17
# The default Compose stack's ports and the swarm stack's (1000 lower: no Compose stack uses them, see
# tests/stack/name.sh), in the same order.
SWARM_DEFAULT_PORTS=(58001 58002 58003 58080 55432 56379)
export STACK_SERVICES=$SWARM_LIB/stack/services
export STACK_PORT_FRONTEND=57001 STACK_PORT_BACKEND=57002 STACK_PORT_WORKER=57003 STACK_PORT_NGINX=57080
export STACK_PORT_POSTGRES=54432 STACK_PORT_REDIS=55379
SWARM_PORTS=("$STACK_PORT_FRONTEND" "$STACK_PORT_BACKEND" "$STACK_PORT_WORKER" "$STACK_PORT_NGINX" "$STACK_PORT_POSTGRES" "$STACK_PORT_REDIS")
