// The tiny programs packed into the real-node cluster's local images (no registry here).
// Standard library only: tests/cluster/build-tools.sh --real-node builds them statically.
module modeltrust.local/images

go 1.25
