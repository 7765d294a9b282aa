#!/usr/bin/env python3
"""Small HTTPS/1.1 client of the edgenode API for the benchmarks (stdlib only).

  api.py claim URL HANDLE PASSWORD                 -> token (claims the node: admin)
  api.py upload URL TOKEN CONC FILE...             -> one media id per line, in file order
  api.py posts URL TOKEN IDS_FILE COUNT CONC VISIBILITY [PER_POST]
                                                   -> creates COUNT posts, media cycled
  api.py get URL PATH [TOKEN]                      -> the JSON answer
  api.py thumbs URL IDS_FILE DIR [TOKEN]           -> saves /api/v1/media/{id}/thumb as DIR/{id}.jpg
  api.py upload-load URL TOKEN CONC SECONDS FILE...-> uploads files (each once, in turn) from
                                                      CONC connections for at most SECONDS

Certificates are not verified: the node's is self-signed and the traffic is loopback.
Each worker keeps one keep-alive connection. Every loop is bounded in count and time.
"""
import hashlib, http.client, json, ssl, sys, threading, time, urllib.parse

CTX = ssl.create_default_context()
CTX.check_hostname = False
CTX.verify_mode = ssl.CERT_NONE


class Client:
    def __init__(self, url, token=None):
        parsed = urllib.parse.urlparse(url)
        self.host, self.port, self.token = parsed.hostname, parsed.port, token
        self.conn = None

    def request(self, method, path, body=None, content_type="application/json", attempts=3):
        headers = {}
        if self.token:
            headers["authorization"] = "Bearer " + self.token
        if body is not None:
            headers["content-type"] = content_type
        for attempt in range(attempts):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPSConnection(self.host, self.port, context=CTX, timeout=120)
                self.conn.request(method, path, body=body, headers=headers)
                response = self.conn.getresponse()
                data = response.read()
                return response.status, data
            except (ConnectionError, http.client.HTTPException, ssl.SSLError, TimeoutError, OSError):
                if self.conn:
                    self.conn.close()
                self.conn = None
                if attempt == attempts - 1:
                    raise
                time.sleep(0.2)

    def json(self, method, path, value=None):
        body = None if value is None else json.dumps(value).encode()
        status, data = self.request(method, path, body)
        return status, (json.loads(data) if data else None)


def parallel(conc, jobs, work):
    """Runs work(client_index, job) over jobs from conc threads; returns results in job order."""
    results = [None] * len(jobs)
    lock = threading.Lock()
    next_job = [0]
    errors = []

    def worker(index):
        while True:
            with lock:
                if next_job[0] >= len(jobs) or errors:
                    return
                job = next_job[0]
                next_job[0] += 1
            try:
                results[job] = work(index, jobs[job])
            except Exception as error:  # noqa: BLE001 - reported below
                with lock:
                    errors.append(f"job {job}: {error}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(conc)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        sys.exit("errors: " + "; ".join(errors[:5]))
    return results


def main(argv):
    command = argv[0]
    if command == "claim":
        url, handle, password = argv[1:4]
        status, answer = Client(url).json("POST", "/api/v1/accounts",
                                          {"handle": handle, "password": password, "claim": "BENCH-CLAIM-CODE"})
        if status != 201:
            sys.exit(f"claim: {status} {answer}")
        print(answer["token"])
    elif command == "upload":
        url, token, conc, files = argv[1], argv[2], int(argv[3]), argv[4:]
        clients = [Client(url, token) for _ in range(conc)]

        def upload(index, path):
            with open(path, "rb") as f:
                data = f.read()
            digest = hashlib.sha256(data).hexdigest()
            status, answer = clients[index].request("PUT", f"/api/v1/media/{digest}", data, "image/jpeg")
            if status not in (200, 201):
                raise RuntimeError(f"{path}: {status} {answer[:200]!r}")
            return json.loads(answer)["id"]

        for media_id in parallel(conc, files, upload):
            print(media_id)
    elif command == "posts":
        url, token, ids_file, count, conc, visibility = argv[1], argv[2], argv[3], int(argv[4]), int(argv[5]), argv[6]
        per_post = int(argv[7]) if len(argv) > 7 else 1
        ids = [line.strip() for line in open(ids_file) if line.strip()]
        clients = [Client(url, token) for _ in range(conc)]

        def post(index, number):
            media = [ids[(number * per_post + k) % len(ids)] for k in range(per_post)] if ids else []
            status, answer = clients[index].json(
                "POST", "/api/v1/posts",
                {"caption": f"bench post {number} at the #harbour", "media": media, "visibility": visibility})
            if status != 201:
                raise RuntimeError(f"post {number}: {status} {answer}")
            return answer["id"]

        for post_id in parallel(conc, list(range(count)), post):
            print(post_id)
    elif command == "get":
        url, path = argv[1], argv[2]
        status, answer = Client(url, argv[3] if len(argv) > 3 else None).json("GET", path)
        if status != 200:
            sys.exit(f"get {path}: {status} {answer}")
        print(json.dumps(answer))
    elif command == "thumbs":
        url, ids_file, out = argv[1], argv[2], argv[3]
        client = Client(url, argv[4] if len(argv) > 4 else None)
        for media_id in (line.strip() for line in open(ids_file) if line.strip()):
            status, data = client.request("GET", f"/api/v1/media/{media_id}/thumb")
            if status != 200:
                sys.exit(f"thumb {media_id}: {status}")
            with open(f"{out}/{media_id}.jpg", "wb") as f:
                f.write(data)
    elif command == "upload-load":
        url, token, conc, seconds, files = argv[1], argv[2], int(argv[3]), float(argv[4]), argv[5:]
        deadline = time.monotonic() + seconds
        clients = [Client(url, token) for _ in range(conc)]
        counts = {"new": 0, "known": 0, "error": 0}
        lock = threading.Lock()
        latencies = []

        def upload(index, path):
            if time.monotonic() >= deadline:
                return
            with open(path, "rb") as f:
                data = f.read()
            digest = hashlib.sha256(data).hexdigest()
            started = time.monotonic()
            status, _ = clients[index].request("PUT", f"/api/v1/media/{digest}", data, "image/jpeg")
            with lock:
                latencies.append(time.monotonic() - started)
                counts["new" if status == 201 else "known" if status == 200 else "error"] += 1

        started = time.monotonic()
        parallel(conc, files, upload)
        elapsed = time.monotonic() - started
        latencies.sort()
        p99 = latencies[int(len(latencies) * 0.99)] if latencies else 0
        print(json.dumps({**counts, "seconds": round(elapsed, 1), "p99_s": round(p99, 3)}))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
