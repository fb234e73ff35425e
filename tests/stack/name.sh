# Which live test stack: one setting, FLOWSTATE_TEST_STACK (source this file; bash only). The rule is
# tests/stack_setting.py's: flowstate-test (the default) is tests/stack as written; flowstate-test-N (N = 1..7) is
# another one on the same machine, Compose project flowstate-test-N with every port N*1000 higher, its configuration
# rendered under $CACHE/stacks/flowstate-test-N by tests/stack/up. Sets PROJECT, PORT_OFFSET, STACK_FILES (the
# folder of its services/ and flowstate.toml) and exports the STACK_* variables docker-compose.yml reads.
PROJECT=${FLOWSTATE_TEST_STACK:-flowstate-test}
case $PROJECT in
    flowstate-test) PORT_OFFSET=0 ;;
    flowstate-test-[1-7]) PORT_OFFSET=$(( ${PROJECT##*-} * 1000 )) ;;
    *) printf 'FLOWSTATE_TEST_STACK=%s: name the live test stack flowstate-test (the default) or flowstate-test-1 to flowstate-test-7\n' \
           "$PROJECT" >&2
       exit 2 ;;
esac
# The ports of the default stack; another stack's are these plus PORT_OFFSET.
DEFAULT_PORTS=(58001 58002 58003 58080 55432 56379)
# The postgres service's WAL archive (point-in-time recovery), one folder per stack, on the host.
export STACK_WAL_ARCHIVE=/var/cache/flowstate-test/wal/$PROJECT
if [ "$PORT_OFFSET" -eq 0 ]; then
    STACK_FILES=$HERE
else
    STACK_FILES=/var/cache/flowstate-test/stacks/$PROJECT
    export STACK_SERVICES=$STACK_FILES/services
    export STACK_PORT_FRONTEND=$((58001 + PORT_OFFSET)) STACK_PORT_BACKEND=$((58002 + PORT_OFFSET))
    export STACK_PORT_WORKER=$((58003 + PORT_OFFSET)) STACK_PORT_NGINX=$((58080 + PORT_OFFSET))
    export STACK_PORT_POSTGRES=$((55432 + PORT_OFFSET)) STACK_PORT_REDIS=$((56379 + PORT_OFFSET))
fi
