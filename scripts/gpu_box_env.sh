# Source this on a GPU machine with no network (the lent box): installs the wheels carried in
# .whl/ (fetched on a machine with network by scripts/fetch_gpu_wheels.sh) into /tmp/site.
# Usage: source scripts/gpu_box_env.sh
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
  .whl/*.whl || return 1
if ! PYTHONPATH=/tmp/site python3 -c "import thrift" 2>/dev/null; then
  python3 -m pip install -q --no-build-isolation --no-deps --target /tmp/site .whl/thrift-*.tar.gz \
    || return 1
fi
export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export PATH="/tmp/site/bin:$PATH"  # py-spy
python3 -c "import thrift.protocol.fastbinary" 2>/dev/null \
  || echo "warning: thrift's C extension (fastbinary) is missing: the server will be slower"
