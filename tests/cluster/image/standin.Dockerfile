# A stand-in for every image of the stack, for tests/cluster: busybox sleeping, and the
# commands stack.yml's healthchecks run (python3, rabbitmq-diagnostics, pg_isready, wget) answering
# "healthy". Lets the real stack.yml deploy and become healthy on a test Swarm without
# the real (multi-GB) images. Built FROM the test node image: no registry needed.
ARG NODE_IMAGE
FROM ${NODE_IMAGE} AS tools
RUN mkdir -p /standin/bin /standin/usr/local/bin /standin/tmp /standin/etc \
 && cp /bin/busybox /standin/bin/busybox \
 && ln -s busybox /standin/bin/sh && ln -s busybox /standin/bin/sleep \
 && for c in python3 rabbitmq-diagnostics pg_isready wget; do \
      printf '#!/bin/sh\nexit 0\n' > /standin/usr/local/bin/$c && chmod 755 /standin/usr/local/bin/$c; \
    done \
 && echo 'root:x:0:0:root:/:/bin/sh' > /standin/etc/passwd \
 && chmod 1777 /standin/tmp

FROM scratch
LABEL org.wildswarm.test=cluster
COPY --from=tools /standin/ /
ENV PATH=/usr/local/bin:/bin
ENTRYPOINT ["/bin/sh", "-c", "exec sleep 2147483647"]
