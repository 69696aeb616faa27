package testimage

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// Push uploads the image b to the registry at base (e.g. http://127.0.0.1:5000)
// as repo:tag for each tag, through the OCI distribution API: each blob the
// repository lacks in a POST and a PUT, then the manifest. The registry must
// answer with the manifest's digest, so that a registry which stored other
// bytes than ours is caught here rather than in a test that pulls the image.
func Push(ctx context.Context, client *http.Client, base, repo string, tags []string, b *Blobs) error {
	if len(tags) == 0 {
		return fmt.Errorf("pushing %s: no tag given", repo)
	}
	if _, err := url.Parse(base); err != nil {
		return fmt.Errorf("registry address %q: %w", base, err)
	}
	base = strings.TrimSuffix(base, "/")
	for _, blob := range []struct {
		desc Descriptor
		data []byte
	}{{b.Layer, b.LayerData}, {b.Config, b.ConfigJSON}} {
		if err := pushBlob(ctx, client, base, repo, blob.desc, blob.data); err != nil {
			return fmt.Errorf("pushing %s blob %s: %w", repo, blob.desc.Digest, err)
		}
	}
	for _, tag := range tags {
		u := fmt.Sprintf("%s/v2/%s/manifests/%s", base, repo, tag)
		resp, err := do(ctx, client, http.MethodPut, u, b.Manifest.MediaType, b.ManifestJSON)
		if err != nil {
			return fmt.Errorf("pushing the manifest of %s:%s: %w", repo, tag, err)
		}
		if resp.StatusCode != http.StatusCreated {
			return fmt.Errorf("pushing the manifest of %s:%s: %s", repo, tag, status(resp))
		}
		if got := resp.Header.Get("Docker-Content-Digest"); got != b.Manifest.Digest {
			return fmt.Errorf("pushing the manifest of %s:%s: the registry stored digest %q, want %s", repo, tag, got, b.Manifest.Digest)
		}
	}
	return nil
}

// pushBlob uploads one blob unless the repository has it: a POST opens the
// upload, a PUT with the digest sends the data and closes it.
func pushBlob(ctx context.Context, client *http.Client, base, repo string, d Descriptor, data []byte) error {
	if int64(len(data)) != d.Size {
		return fmt.Errorf("have %d bytes, the descriptor says %d", len(data), d.Size)
	}
	resp, err := do(ctx, client, http.MethodHead, fmt.Sprintf("%s/v2/%s/blobs/%s", base, repo, d.Digest), "", nil)
	if err != nil {
		return err
	}
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	start := fmt.Sprintf("%s/v2/%s/blobs/uploads/", base, repo)
	resp, err = do(ctx, client, http.MethodPost, start, "", nil)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("starting the upload: %s", status(resp))
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || resp.Header.Get("Location") == "" {
		return fmt.Errorf("starting the upload: the registry gave no usable Location (%q)", resp.Header.Get("Location"))
	}
	// The Location may be relative to the request's URL.
	startURL, _ := url.Parse(start)
	loc = startURL.ResolveReference(loc)
	q := loc.Query()
	q.Set("digest", d.Digest)
	loc.RawQuery = q.Encode()
	resp, err = do(ctx, client, http.MethodPut, loc.String(), "application/octet-stream", data)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("uploading %d bytes: %s", len(data), status(resp))
	}
	return nil
}

// do sends one request and reads its answer's body (kept for status).
func do(ctx context.Context, client *http.Client, method, u, contentType string, body []byte) (*http.Response, error) {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, r)
	if err != nil {
		return nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	msg, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return nil, fmt.Errorf("%s %s: reading the answer: %w", method, u, err)
	}
	resp.Body = io.NopCloser(bytes.NewReader(msg))
	return resp, nil
}

// status describes a registry's unexpected answer, with the start of its body.
func status(resp *http.Response) string {
	msg, _ := io.ReadAll(resp.Body)
	return fmt.Sprintf("%s %s answered %s: %s", resp.Request.Method, resp.Request.URL.Redacted(), resp.Status, strings.TrimSpace(string(msg)))
}
