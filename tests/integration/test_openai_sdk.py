#!/usr/bin/env python3
"""retnetd through the official OpenAI Python SDK (openai.OpenAI with
base_url pointing at the server): completions plain and streamed, n, stop,
logprobs, echo, seeds, models.list(), chat plain and streamed, and the SDK's
error classes for 400, 401, 404 and 429.

Run by `make check-sdk` with the interpreter of build/sdk-venv, where the
pinned SDK of tests/integration/requirements-sdk.txt is installed.  The
model, the server wrapper and the environment variables (RETNETD, RETNET,
RETNETD_TEST_DEVICE) are those of test_server.py.
"""

import os
import sys
import time
import unittest

import openai

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_server as ts  # noqa: E402

M = ts.MODEL_NAME
GREEDY = dict(temperature=0, extra_body={"ignore_eos": True})


def setUpModule():
    ts.setUpModule()


def tearDownModule():
    ts.tearDownModule()


class SDKTestCase(ts.ServerTestCase):
    api_key = "unused"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.client = cls.make_client(cls.api_key)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        super().tearDownClass()

    @classmethod
    def make_client(cls, key):
        # no retries: an error must reach the test as the status it was
        return openai.OpenAI(base_url="http://127.0.0.1:%d/v1" % cls.port, api_key=key, max_retries=0,
                             timeout=ts.HTTP_TIMEOUT)

    def ntokens(self, text):
        status, _, js = ts.http_json(self.port, "POST", "/tokenize", {"prompt": text})
        self.assertEqual(status, 200, js)
        return js["count"]


def collect(stream, chat=False):
    """Texts and finish reasons per choice index, and the chunks, of a stream."""
    texts, finishes, chunks = {}, {}, []
    for chunk in stream:
        chunks.append(chunk)
        for ch in chunk.choices:
            piece = (ch.delta.content or "") if chat else ch.text
            texts[ch.index] = texts.get(ch.index, "") + piece
            if ch.finish_reason is not None:
                finishes.setdefault(ch.index, []).append(ch.finish_reason)
    return texts, finishes, chunks


class TestCompletions(SDKTestCase):
    server_args = ("--slots", "4")

    def greedy(self, prompt, max_tokens=16, **kw):
        r = self.client.completions.create(model=M, prompt=prompt, max_tokens=max_tokens, **GREEDY, **kw)
        return r.choices[0].text

    def test_models_list(self):
        models = list(self.client.models.list())
        self.assertEqual([m.id for m in models], [M])
        self.assertEqual(models[0].object, "model")
        self.assertEqual(self.client.models.retrieve(M).id, M)
        with self.assertRaises(openai.NotFoundError):
            self.client.models.retrieve("no-such-model")
        self.assertEqual(models[0].owned_by, "retnetd")
        self.assertIsInstance(models[0].created, int)

    def test_completion(self):
        r = self.client.completions.create(model=M, prompt="Hello world", max_tokens=8, **GREEDY)
        self.assertIsInstance(r, openai.types.Completion)
        self.assertEqual(r.object, "text_completion")
        self.assertTrue(r.id.startswith("cmpl-"))
        self.assertEqual(r.model, M)
        self.assertEqual(len(r.choices), 1)
        ch = r.choices[0]
        self.assertEqual((ch.index, ch.finish_reason), (0, "length"))
        self.assertIsNone(ch.logprobs)
        self.assertIsInstance(ch.text, str)
        self.assertEqual(r.usage.completion_tokens, 8)
        self.assertEqual(r.usage.prompt_tokens, self.ntokens("Hello world"))
        self.assertEqual(r.usage.total_tokens, r.usage.prompt_tokens + 8)
        # the same text as the plain HTTP API gives
        status, _, js = ts.http_json(self.port, "POST", "/v1/completions",
                                     {"prompt": "Hello world", "max_tokens": 8, "temperature": 0,
                                      "ignore_eos": True})
        self.assertEqual(status, 200, js)
        self.assertEqual(js["choices"][0]["text"], ch.text)
        # token ids as the prompt
        ids = ts.http_json(self.port, "POST", "/tokenize", {"prompt": "Hello world"})[2]["tokens"]
        self.assertEqual(self.greedy(ids, 8), ch.text)

    def test_stream_with_usage(self):
        want = self.client.completions.create(model=M, prompt="Streaming", max_tokens=24, **GREEDY)
        stream = self.client.completions.create(model=M, prompt="Streaming", max_tokens=24, stream=True,
                                                stream_options={"include_usage": True}, **GREEDY)
        texts, finishes, chunks = collect(stream)
        self.assertEqual(texts, {0: want.choices[0].text})
        self.assertEqual(finishes, {0: ["length"]})
        for c in chunks[:-1]:
            self.assertIsInstance(c, openai.types.Completion)
            self.assertIsNone(c.usage)
            self.assertEqual(c.id, chunks[0].id)
        last = chunks[-1]
        self.assertEqual(last.choices, [])
        self.assertEqual(last.usage.completion_tokens, 24)
        self.assertEqual(last.usage.prompt_tokens, want.usage.prompt_tokens)
        self.assertEqual(last.usage.total_tokens, want.usage.total_tokens)
        # without stream_options: no usage chunk
        texts, _, chunks = collect(self.client.completions.create(model=M, prompt="Streaming", max_tokens=24,
                                                                  stream=True, **GREEDY))
        self.assertEqual(texts, {0: want.choices[0].text})
        self.assertTrue(all(c.choices for c in chunks))

    def test_n(self):
        r = self.client.completions.create(model=M, prompt="Hello", max_tokens=10, n=2, temperature=1.0,
                                           seed=5, extra_body={"ignore_eos": True})
        self.assertEqual([c.index for c in r.choices], [0, 1])
        self.assertEqual(r.usage.completion_tokens, 20)
        self.assertNotEqual(r.choices[0].text, r.choices[1].text)
        r = self.client.completions.create(model=M, prompt="Hello", max_tokens=10, n=2, **GREEDY)
        self.assertEqual([c.text for c in r.choices], [self.greedy("Hello", 10)] * 2)
        # streamed, both choices
        texts, finishes, _ = collect(self.client.completions.create(
            model=M, prompt="Hello", max_tokens=10, n=2, stream=True, **GREEDY))
        self.assertEqual(texts, {0: r.choices[0].text, 1: r.choices[1].text})
        self.assertEqual(finishes, {0: ["length"], 1: ["length"]})

    def test_stop(self):
        full = self.greedy("Stop strings are", 48)
        self.assertGreaterEqual(len(full), 6, full)
        stop = full[2:5]
        want = full[:full.find(stop)]
        r = self.client.completions.create(model=M, prompt="Stop strings are", max_tokens=48, stop=[stop],
                                           **GREEDY)
        self.assertEqual(r.choices[0].text, want)
        self.assertEqual(r.choices[0].finish_reason, "stop")
        self.assertLess(r.usage.completion_tokens, 48)
        texts, finishes, _ = collect(self.client.completions.create(
            model=M, prompt="Stop strings are", max_tokens=48, stop=stop, stream=True, **GREEDY))
        self.assertEqual(texts, {0: want})
        self.assertEqual(finishes, {0: ["stop"]})

    def test_logprobs(self):
        r = self.client.completions.create(model=M, prompt="Log probabilities", max_tokens=6, logprobs=2,
                                           **GREEDY)
        lp = r.choices[0].logprobs
        self.assertEqual(len(lp.tokens), 6)
        self.assertEqual(len(lp.token_logprobs), 6)
        self.assertEqual(len(lp.top_logprobs), 6)
        self.assertEqual(lp.text_offset[0], 0)
        for chosen, top in zip(lp.token_logprobs, lp.top_logprobs):
            self.assertLessEqual(chosen, 0)
            self.assertTrue(1 <= len(top) <= 2, top)
            self.assertAlmostEqual(max(top.values()), chosen, places=4)  # greedy: the best one

    def test_echo(self):
        plain = self.greedy("Echo this", 8)
        r = self.client.completions.create(model=M, prompt="Echo this", max_tokens=8, echo=True, **GREEDY)
        self.assertEqual(r.choices[0].text, "Echo this" + plain)

    def test_seed(self):
        def sample(seed):
            return self.client.completions.create(model=M, prompt="Hello", max_tokens=24, temperature=1.0,
                                                  seed=seed, extra_body={"ignore_eos": True}).choices[0].text
        a, b, c = sample(1234), sample(1234), sample(4321)
        self.assertEqual(a, b)
        self.assertNotEqual(a, c)

    def test_chat(self):
        msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]
        r = self.client.chat.completions.create(model=M, messages=msgs, max_tokens=12, **GREEDY)
        self.assertIsInstance(r, openai.types.chat.ChatCompletion)
        self.assertEqual(r.object, "chat.completion")
        self.assertTrue(r.id.startswith("chatcmpl-"))
        ch = r.choices[0]
        self.assertEqual(ch.message.role, "assistant")
        self.assertIsInstance(ch.message.content, str)
        self.assertEqual(ch.finish_reason, "length")
        self.assertEqual(r.usage.completion_tokens, 12)
        # max_completion_tokens, the newer name
        r2 = self.client.chat.completions.create(model=M, messages=msgs, max_completion_tokens=12, **GREEDY)
        self.assertEqual(r2.choices[0].message.content, ch.message.content)
        # streamed, with usage
        stream = self.client.chat.completions.create(model=M, messages=msgs, max_tokens=12, stream=True,
                                                     stream_options={"include_usage": True}, **GREEDY)
        texts, finishes, chunks = collect(stream, chat=True)
        self.assertEqual(texts, {0: ch.message.content})
        self.assertEqual(finishes, {0: ["length"]})
        self.assertEqual(chunks[0].object, "chat.completion.chunk")
        self.assertEqual(chunks[0].choices[0].delta.role, "assistant")
        self.assertEqual(chunks[-1].choices, [])
        self.assertEqual(chunks[-1].usage.completion_tokens, 12)
        # content as text parts is the same prompt
        parts = [{"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
                 {"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}]}]
        r3 = self.client.chat.completions.create(model=M, messages=parts, max_tokens=12, **GREEDY)
        self.assertEqual(r3.choices[0].message.content, ch.message.content)

    def test_bad_request(self):
        for kw, param in ((dict(max_tokens=0), "max_tokens"), (dict(temperature=5), "temperature"),
                          (dict(n=100), "n"), (dict(stop=["a", "b", "c", "d", "e"]), "stop"),
                          (dict(logprobs=50), "logprobs"), (dict(extra_body={"frobnicate": 1}), "frobnicate")):
            with self.assertRaises(openai.BadRequestError) as cm:
                self.client.completions.create(model=M, prompt="x", **kw)
            e = cm.exception
            self.assertEqual(e.status_code, 400)
            self.assertEqual(e.type, "invalid_request_error")
            self.assertEqual(e.param, param, kw)
        with self.assertRaises(openai.BadRequestError) as cm:
            self.client.chat.completions.create(model=M, messages=[{"role": "robot", "content": "x"}])
        self.assertEqual(cm.exception.param, "messages")
        # streamed requests are refused before the stream starts
        with self.assertRaises(openai.BadRequestError):
            self.client.completions.create(model=M, prompt="x", max_tokens=-1, stream=True)

    def test_not_found(self):
        with self.assertRaises(openai.NotFoundError) as cm:
            self.client.completions.create(model="no-such-model", prompt="x", max_tokens=1)
        self.assertEqual(cm.exception.status_code, 404)
        self.assertEqual(cm.exception.param, "model")
        self.assertEqual(cm.exception.type, "not_found_error")
        with self.assertRaises(openai.NotFoundError):
            self.client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])


class TestAuthentication(SDKTestCase):
    server_args = ("--api-key", "sekret", "--slots", "2")
    api_key = "sekret"

    def test_api_key(self):
        r = self.client.completions.create(model=M, prompt="Hi", max_tokens=2)
        self.assertEqual(r.usage.completion_tokens, 2)
        self.assertEqual([m.id for m in self.client.models.list()], [M])
        texts, _, _ = collect(self.client.completions.create(model=M, prompt="Hi", max_tokens=2, stream=True))
        self.assertIn(0, texts)
        for key in ("wrong", "sekret2", "sekre"):
            with self.make_client(key) as bad:
                with self.assertRaises(openai.AuthenticationError) as cm:
                    bad.completions.create(model=M, prompt="Hi", max_tokens=2)
                self.assertEqual(cm.exception.status_code, 401)
                self.assertEqual(cm.exception.code, "invalid_api_key")
                with self.assertRaises(openai.AuthenticationError):
                    bad.models.list()
                with self.assertRaises(openai.AuthenticationError):
                    bad.chat.completions.create(model=M, messages=[{"role": "user", "content": "x"}], stream=True)


class TestRateLimit(SDKTestCase):
    server_args = ("--slots", "1", "--max-waiting", "1", "--max-tokens", "100000")

    def test_429(self):
        # one request runs (the only slot), one waits (the only queue place)
        running = self.client.completions.create(model=M, prompt="running", max_tokens=100000, stream=True,
                                                 extra_body={"ignore_eos": True})
        queued = None
        try:
            first = next(iter(running))
            self.assertEqual(len(first.choices), 1)
            queued = ts.SSEStream(self.port, "/v1/completions",
                                  dict(prompt="queued", max_tokens=2, ignore_eos=True, stream=True))
            time.sleep(0.5)  # let the server take the queued request in
            with self.assertRaises(openai.RateLimitError) as cm:
                self.client.completions.create(model=M, prompt="third", max_tokens=1)
            e = cm.exception
            self.assertEqual(e.status_code, 429)
            self.assertEqual(e.type, "rate_limit_error")
            self.assertEqual(e.code, "server_is_overloaded")
            self.assertGreaterEqual(int(e.response.headers["retry-after"]), 1)
            with self.assertRaises(openai.RateLimitError):
                self.client.chat.completions.create(model=M, messages=[{"role": "user", "content": "x"}],
                                                    max_tokens=1, stream=True)
        finally:
            running.close()
            if queued:
                queued.close()
        # once they are gone, requests run again
        deadline = time.monotonic() + 30
        while True:
            try:
                r = self.client.completions.create(model=M, prompt="later", max_tokens=2,
                                                   extra_body={"ignore_eos": True})
                break
            except openai.RateLimitError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self.assertEqual(r.usage.completion_tokens, 2)


if __name__ == "__main__":
    unittest.main(verbosity=2)
