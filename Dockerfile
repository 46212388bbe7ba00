# The simx dashboard in a container (used by compose.yaml for a team with a shared PostgreSQL label database).
# CPU build of PyTorch; for a GPU host start from an image with CUDA and drop the --index-url line.
FROM python:3.11-slim

# the real demo images (GPL-2+, fetched from Debian, never part of simx)
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends tuxpaint-stamps-default \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/simx
COPY requirements.txt .
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu torch==2.14.1 torchvision==0.29.1 \
 && pip install --no-cache-dir -r requirements.txt
COPY . .
RUN pip install --no-cache-dir --no-deps .

ENV SIMX_INDEXES=/data/indexes SIMX_DATA=/data/demo
VOLUME /data
EXPOSE 8501
# build the demo indexes when missing (idempotent), then serve on every interface of the container
CMD ["sh", "-c", "simx demo && exec simx dashboard --address 0.0.0.0 --port 8501"]
