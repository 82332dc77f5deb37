#!/usr/bin/env python3
"""Generate the tokenizer parity fixtures in tests/fixtures/tokenizer/ with Hugging Face `tokenizers`.

    tools/venv.sh
    build/venv/bin/python tools/make_tokenizer_fixtures.py [--out DIR] [--data tinyshakespeare.txt]

Written into DIR (default tests/fixtures/tokenizer):

  corpus.jsonl            the shared test corpus, one {"b64": raw input bytes} object per line,
                          about 1.05 MB of prose, code, whitespace, CJK, emoji, combining marks,
                          control characters, numbers, very long words, random code points and
                          invalid UTF-8
  <name>.json             a tokenizer.json trained here on tinyshakespeare.txt plus the
                          valid-UTF-8 part of the corpus:
                            bytelevel         GPT-2/NeoX byte-level BPE
                            spbpe             SentencePiece-style BPE with byte fallback
                                              (Llama / fla-hub form: Prepend+Replace normalizer)
                            spbpe_metaspace   the same model with the Metaspace pre-tokenizer
                                              and decoder instead of the normalizer
  <name>.expect.jsonl     {"line", "ids"[, "decoded"]} per corpus line: text =
                          bytes.decode('utf-8', 'replace'), ids = encode(text,
                          add_special_tokens=False).ids, decoded = decode(ids,
                          skip_special_tokens=False), written only when it differs from text.
                          spbpe_metaspace lists only the lines it encodes differently from
                          spbpe, and every 20th line (METASPACE_EVERY).
  <name>.decode.jsonl     200 id sequences of length 1-40 with their decode() output, with
                          and without special tokens, and tokenizers' DecodeStream chunks
  unicode_classes.json    the code points that the ByteLevel pre-tokenizer's regex (Oniguruma,
                          as built into tokenizers) puts in \\p{L}, \\p{N} and \\s

The output is a function of this script, the tokenizers version, tinyshakespeare.txt and the
code lines, which come from this repository's engine/*.c and tools/*.py: regenerating after
those files change gives a different, self-consistent set.  Every corpus kind has its own
seeded generator, and the trainer is made deterministic (see train_spbpe).
tests/fixtures/tokenizer/README.md documents the formats.
"""
import argparse
import base64
import glob
import importlib.metadata as md
import json
import os
import random
import sys
import time
import unicodedata

# Deterministic and light on the CPU: tokenizers' trainer and batch encoder use rayon.
os.environ.setdefault('RAYON_NUM_THREADS', '2')
os.environ.setdefault('TOKENIZERS_PARALLELISM', 'true')

sys.dont_write_bytecode = True          # keep tools/ free of __pycache__

from tokenizers import (AddedToken, Regex, Tokenizer, decoders, models,  # noqa: E402
                        normalizers, pre_tokenizers, processors, trainers)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

VOCAB_SIZE = 2000
CORPUS_MIN_BYTES = 1_050_000     # > 1 MiB
PROSE_BYTES = 360_000
CODE_BYTES = {'c': 120_000, 'py': 100_000}
SEED = 2024

BYTELEVEL_SPECIAL = ['<|endoftext|>', '<|pad|>']
BYTELEVEL_ADDED = '<|user|>'
SP_SPECIAL = ['<unk>', '<s>', '</s>']
SP_ALPHABET_MAX = 300       # characters of the SentencePiece-style alphabet; the rest byte-fall-back
SP = '\u2581'               # ▁
METASPACE_EVERY = 20


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Corpus
# --------------------------------------------------------------------------------------------

# Small lexicons: frequent enough that their characters enter the SentencePiece alphabet and
# get merges; rare characters from the full blocks are mixed in to exercise byte fallback.
ZH_WORDS = ('我们 你们 他们 今天 明天 昨天 中国 北京 上海 学生 老师 学校 朋友 时间 工作 问题 '
            '世界 语言 模型 计算机 程序 数据 文件 网络 系统 开发 测试 服务器 推理 训练 文本 '
            '的 了 是 在 有 和 不 也 就 都 很 要 会 说 看 去 来 这 那 一个 没有 什么 可以 因为 所以 '
            '但是 如果 已经 非常 喜欢 知道 觉得 东西 地方 天气 下雨 吃饭 喝茶 读书 写字 电脑 手机').split()
ZH_PUNCT = ['，', '。', '！', '？', '、', '；', '：', '“', '”', '（', '）', '《', '》', '…']
JA_WORDS = ('わたし あなた これ それ あれ ここ そこ です ます でした ません ありがとう こんにちは '
            'さようなら おはよう すみません 日本 東京 大阪 学校 先生 学生 時間 今日 明日 昨日 '
            'コンピュータ プログラム データ ファイル ネットワーク サーバー テスト モデル トークン '
            'は が を に で と の も へ から まで より 食べる 飲む 見る 行く 来る する 書く 読む').split()
JA_PUNCT = ['、', '。', '「', '」', '！', '？', '・', 'ー']
KO_WORDS = ('안녕하세요 감사합니다 사랑해요 한국 서울 부산 학교 선생님 학생 친구 시간 오늘 '
            '내일 어제 컴퓨터 프로그램 데이터 파일 네트워크 서버 테스트 모델 토큰 '
            '은 는 이 가 을 를 에 에서 와 과 의 도 하다 합니다 했습니다 입니다 있습니다 없습니다').split()
CJK_BLOCKS = [(0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x3040, 0x309F),
              (0x30A0, 0x30FF), (0xAC00, 0xD7A3), (0x1100, 0x11FF), (0x3130, 0x318F),
              (0xFF61, 0xFF9F), (0xFF01, 0xFF5E), (0x3000, 0x303F), (0xF900, 0xFAFF)]

EMOJI = ['😀', '😂', '🥲', '😍', '🤔', '😎', '😭', '🙏', '👍', '👎', '👋', '👏', '💪', '🔥', '✨',
         '🎉', '❤', '❤️', '💔', '⭐', '🌟', '☀️', '🌧', '⚡', '🍕', '🍣', '☕', '🚀', '🛸', '💻',
         '📱', '📦', '✅', '❌', '⚠️', '🐍', '🦀', '🐧', '🐱', '🐶', '🦄', '🌍', '🗺️', '⌛', '🧪',
         '🤖', '🧠', '👀', '🙈', '💯', '🆗', '🅰️', '©️', '®️', '™️', '↔️', '▶️', '⏸', '#️⃣', '1️⃣',
         '*️⃣']
SKIN = ['\U0001F3FB', '\U0001F3FC', '\U0001F3FD', '\U0001F3FE', '\U0001F3FF']
SKIN_BASES = ['👋', '👍', '🙏', '💪', '🧑', '👩', '👨', '🤝', '✌', '☝']
ZWJ = ['👨\u200d👩\u200d👧\u200d👦', '👩\u200d💻', '🧑\u200d🚀', '🏳️\u200d🌈', '🏳️\u200d⚧️',
       '👩🏽\u200d🔬', '🧑🏿\u200d🤝\u200d🧑🏻', '❤️\u200d🔥', '🐻\u200d❄️', '👁️\u200d🗨️',
       '🧔🏾\u200d♂️', '🏃🏻\u200d♀️\u200d➡️']
FLAGS = ['US', 'JP', 'KR', 'CN', 'DE', 'FR', 'GB', 'BR', 'IN', 'UA', 'VN', 'NP', 'ZA', 'EU', 'UN']
TAG_FLAGS = ['\U0001F3F4\U000E0067\U000E0062\U000E0073\U000E0063\U000E0074\U000E007F',   # Scotland
             '\U0001F3F4\U000E0067\U000E0062\U000E0077\U000E006C\U000E0073\U000E007F']   # Wales

VI_SENTENCES = ['Tiếng Việt là ngôn ngữ chính thức của Việt Nam.',
                'Tôi yêu quê hương tôi, nơi có dòng sông và cánh đồng lúa.',
                'Hôm nay trời đẹp quá, chúng ta đi dạo phố nhé!',
                'Người dân ở đây rất thân thiện và mến khách.',
                'Mỗi buổi sáng, bà tôi uống một tách cà phê sữa đá.',
                'Học, học nữa, học mãi.',
                'Đường đến trường xa lắm, nhưng em vẫn đi bộ mỗi ngày.']
HI_SENTENCES = ['नमस्ते दुनिया', 'हिन्दी भारत की एक प्रमुख भाषा है।',
                'मैं आज बाज़ार जा रहा हूँ।', 'क्या आप मेरी मदद कर सकते हैं?',
                'संस्कृत एक प्राचीन भाषा है।', 'ज्ञान ही शक्ति है।',
                'कृपया धीरे बोलिए।', 'स्वतंत्रता दिवस १५ अगस्त को मनाया जाता है।']
OTHER_SENTENCES = ['Ελληνικά: Καλημέρα κόσμε, τι κάνεις;', 'Русский: Съешь же ещё этих мягких французских булок.',
                   'Українська: Гей, хлопці, вийдіть-но!', 'עִבְרִית: שָׁלוֹם עוֹלָם', 'العربية: مَرْحَبًا بِالْعَالَمِ',
                   'ไทย: สวัสดีครับ ยินดีที่ได้รู้จัก', 'ქართული: გამარჯობა', 'Հայերեն: Բարեւ աշխարհ',
                   'தமிழ்: வணக்கம் உலகம்', 'বাংলা: হ্যালো বিশ্ব', 'Türkçe: Şişli’de ığdır çiçeği.',
                   'Polski: Zażółć gęślą jaźń.', 'Deutsch: Größenwahn, Straße, Äpfel.', 'Français: ça, où, être, Noël.',
                   'Español: ¿Qué tal? ¡Mañana!', 'Íslenska: Þú ert hér. Ægir.', 'ʻŌlelo Hawaiʻi: Aloha ʻāina']
COMBINING = ['\u0300', '\u0301', '\u0302', '\u0303', '\u0304', '\u0306', '\u0307', '\u0308', '\u030A',
             '\u030B', '\u030C', '\u0323', '\u0327', '\u0328', '\u0331', '\u0338', '\u034F', '\u0361',
             '\u20D7', '\u20DD', '\u0489', '\u1AB0', '\u1DC0', '\uFE20']
EN_WORDS = ('the of and to in is that for it as with was on be at by this had not are but from '
            'or have an they which one you were her all she there would their we him been has when '
            'who will more no if out so said what up its about into than them can only other new '
            'some could time these two may then do first any my now such like our over man me even '
            'most made after also did many before must through back years where much your way well').split()


def shakespeare_lines(text, rng, budget):
    """Speeches (blocks separated by blank lines) and single lines, in file order."""
    out, size = [], 0
    blocks = text.split('\n\n')
    for block in blocks:
        if size >= budget:
            break
        r = rng.random()
        if r < 0.65:
            items = [block]
        elif r < 0.75:
            items = [block + '\n\n']
        else:
            items = [ln for ln in block.split('\n') if ln]
            if rng.random() < 0.2:
                items = [ln + '\n' for ln in items]
        for it in items:
            out.append(it)
            size += len(it.encode())
    return out


def code_lines(rng):
    """Lines and blocks of lines from engine/*.c and tools/*.py (sorted by name), up to
    CODE_BYTES of each language."""
    out = []
    for pattern, budget in (('engine/*.c', CODE_BYTES['c']), ('tools/*.py', CODE_BYTES['py'])):
        size = 0
        for path in sorted(glob.glob(os.path.join(ROOT, pattern))):
            with open(path, encoding='utf-8') as f:
                lines = f.read().split('\n')
            i = 0
            while i < len(lines) and size < budget:
                if rng.random() < 0.5:
                    item = lines[i]                     # one source line, without its newline
                    i += 1
                else:
                    n = rng.randint(2, 30)              # a block of lines, newlines included
                    item = '\n'.join(lines[i:i + n]) + ('\n' if rng.random() < 0.5 else '')
                    i += n
                out.append(item)
                size += len(item.encode())
    return out


def whitespace_lines(rng):
    spaces = [' ', '  ', '   ', '    ', '        ', '\t', '\t\t', '\n', '\n\n', '\r\n', '\r', ' \n',
              '\n ', '\t \t', '\u00a0', '\u3000', '\u2003', '\u2009', '\u202f', '\u205f', '\u000b',
              '\u000c', ' \u00a0 ', '\u1680', '\u2000', '\u200a']
    words = EN_WORDS + ['x', 'if', 'return', '{', '}', '()', 'foo', 'bar', '#', '//', 'é', '中', '😀',
                        '1', '42', '.', '...', "'s", "'ll"]
    out = []
    for n in range(1, 41):                  # pure runs of spaces, tabs and newlines
        out += [' ' * n, '\t' * (n % 9 + 1), '\n' * (n % 7 + 1), ' ' * n + 'x', 'x' + ' ' * n,
                'x' + ' ' * n + 'y', ' ' * n + '\n' + ' ' * n, '\t' * (n % 5) + ' ' * n + 'z']
    out += ['', ' ', '\n', '\r\n', '\t', ' \t\n\r\u000b\u000c', '\u00a0\u00a0', '\u3000\u3000abc']
    for _ in range(900):
        k = rng.randint(1, 25)
        parts = []
        for _ in range(k):
            parts.append(rng.choice(words) if rng.random() < 0.5 else rng.choice(spaces))
        out.append(''.join(parts))
    return out


def rand_from_blocks(rng, blocks):
    lo, hi = rng.choice(blocks)
    return chr(rng.randint(lo, hi))


def cjk_lines(rng):
    out = []
    for _ in range(700):
        lang = rng.random()
        parts = []
        n = rng.randint(3, 30)
        for _ in range(n):
            r = rng.random()
            if lang < 0.45:
                parts.append(rng.choice(ZH_WORDS) if r < 0.8 else rng.choice(ZH_PUNCT) if r < 0.92
                             else rand_from_blocks(rng, CJK_BLOCKS[:3]))
            elif lang < 0.75:
                parts.append(rng.choice(JA_WORDS) if r < 0.8 else rng.choice(JA_PUNCT) if r < 0.92
                             else rand_from_blocks(rng, CJK_BLOCKS[3:5] + CJK_BLOCKS[8:9]))
            else:
                parts.append(rng.choice(KO_WORDS) + (' ' if rng.random() < 0.6 else '') if r < 0.85
                             else rand_from_blocks(rng, CJK_BLOCKS[5:8]))
        if rng.random() < 0.2:      # mixed with Latin text, digits and fullwidth forms
            parts.insert(rng.randrange(len(parts) + 1), rng.choice([' GPU ', ' RetNet', ' 2024年', '１２３',
                                                                     'ＡＢＣ', ' v1.2 ', '(test)', ' tokenizer ']))
        out.append(''.join(parts))
    for _ in range(60):             # random characters from the whole blocks
        out.append(''.join(rand_from_blocks(rng, CJK_BLOCKS) for _ in range(rng.randint(1, 40))))
    return out


def emoji_lines(rng):
    out = []
    for _ in range(900):
        parts = []
        for _ in range(rng.randint(1, 16)):
            r = rng.random()
            if r < 0.35:
                parts.append(rng.choice(EMOJI))
            elif r < 0.5:
                parts.append(rng.choice(SKIN_BASES) + rng.choice(SKIN))
            elif r < 0.62:
                parts.append(rng.choice(ZWJ))
            elif r < 0.72:
                cc = rng.choice(FLAGS)
                parts.append(''.join(chr(0x1F1E6 + ord(c) - ord('A')) for c in cc))
            elif r < 0.74:
                parts.append(rng.choice(TAG_FLAGS))
            elif r < 0.78:
                parts.append(chr(rng.randint(0x1F300, 0x1FAFF)))
            elif r < 0.9:
                parts.append(' ' + rng.choice(EN_WORDS) + ' ')
            else:
                parts.append(rng.choice([' ', '!', '!!', '\n', ':)', ' #tag ', '\u200d', '\ufe0f', '\ufe0e']))
        out.append(''.join(parts))
    return out


def combining_lines(rng):
    out = []
    out += ['e\u0301', 'caf\u00e9 / cafe\u0301', '\u00c5ngstr\u00f6m / A\u030angstro\u0308m',
            'n\u0303 \u00f1 N\u0303', '\u0301 leading combining mark', ' \u0301 after a space',
            '1\u20e3 2\u20e3',
            ('Z\u0351\u036b\u0343\u036a\u0302\u036b\u033d\u034f\u0334\u0319\u0324\u031e\u0349\u035a\u032f'
             '\u031e\u0320\u034dA\u0334\u0335\u031c\u0330\u0354\u036bL\u0360G\u0338O\u0335\u0331'),
            '\u1ec7 e\u0323\u0302 \u00ea\u0323', 'k\u0307\u0323\u0301 x\u0308\u0301\u0300']
    for s in VI_SENTENCES + HI_SENTENCES + OTHER_SENTENCES:
        out.append(s)
        out.append(unicodedata.normalize('NFD', s))
    letters = 'aeiouynmsclAEIOUZ'
    for _ in range(900):
        parts = []
        for _ in range(rng.randint(1, 12)):
            r = rng.random()
            if r < 0.3:
                w = rng.choice(EN_WORDS)
                parts.append(''.join(c + (rng.choice(COMBINING) if rng.random() < 0.3 else '') for c in w))
            elif r < 0.45:
                parts.append(rng.choice(letters) + ''.join(rng.choice(COMBINING) for _ in range(rng.randint(1, 6))))
            elif r < 0.65:
                parts.append(rng.choice(VI_SENTENCES).split()[rng.randrange(5)])
            elif r < 0.85:
                parts.append(rng.choice(HI_SENTENCES).split()[0])
            else:
                s = rng.choice(OTHER_SENTENCES)
                parts.append(unicodedata.normalize(rng.choice(['NFC', 'NFD']), s.split(': ')[1]))
        out.append(' '.join(parts))
    return out


def control_lines(rng):
    ctrl = [chr(c) for c in range(0x20)] + ['\x7f'] + [chr(c) for c in range(0x80, 0xa0)] + \
        ['\u2028', '\u2029', '\u200b', '\u200c', '\u200d', '\u200e', '\u200f', '\u2060', '\ufeff',
         '\u00ad', '\u061c', '\u202a', '\u202e', '\u2066', '\u2069', '\ufff9', '\ufffc', '\ufffd']
    out = [''.join(ctrl), '\x00', '\x00\x00\x00', 'a\x00b', '\ufeffBOM at start', 'line\u2028separator',
           'para\u2029graph', 'NEL\u0085here', 'bell\x07 escape\x1b[31mred\x1b[0m', 'back\bspace',
           'CR only\rnext', 'a\x1cb\x1dc\x1ed\x1fe', ' \x1c ', '\x7f\x7f']
    for c in ctrl:
        out.append('x' + c + 'y ' + c + ' ' + c + c + 'z')
    for _ in range(500):
        parts = []
        for _ in range(rng.randint(1, 16)):
            parts.append(rng.choice(ctrl) if rng.random() < 0.4 else rng.choice(EN_WORDS) + rng.choice(['', ' ']))
        out.append(''.join(parts))
    return out


def number_lines(rng):
    out = ['0', '00', '007', '1234567890', '3.14159265358979', '-1e-10', '6.022e23', '0xDEADBEEF',
           '1,000,000', '1 000 000', '12:34:56', '2024-06-01T12:00:00Z', '+1 (555) 123-4567',
           '$1,234.56', '€12,50', '£3', '¥500', '50%', '½ ¼ ¾ ⅓', 'x² + y³ = z⁴', 'H₂O',
           'Ⅰ Ⅱ Ⅲ Ⅳ Ⅻ ⅿ', '٠١٢٣٤٥٦٧٨٩', '۰۱۲۳۴۵۶۷۸۹', '०१२३४५६७८९', '０１２３４５６７８９', '①②③',
           '𝟎𝟏𝟐𝟑', '〇一二三', '𐒠𐒡', "don't won't I'm you're we've they'll she'd it's", "DON'T I'M IT'S",
           "'s 't 're 've 'm 'll 'd", "''s ''", "rock 'n' roll", "l'école d'été", 'O’Neil’s',
           '!!!', '???', '...', '…', '--', '---', '—', '–', '(((', ')))', '[[]]', '{{}}', '<<>>', '<>',
           '!@#$%^&*()_+-=[]{}|;:\'",.<>/?`~', '\\\\', '==>', '->', '=>', '::', ':=', '/* */', '<!-- -->',
           'https://example.com/path?query=1&x=y#frag', 'user@example.org', 'C:\\Windows\\System32',
           '| a | b |\n|---|---|\n| 1 | 2 |', '{"key": [1, 2.5, null, true], "s": "v"}', '<|im_start|>',
           '<|endoftext', '|endoftext|>', '<|pad', '<unk', 's>', '<0x41>', '<0xFF><0x00>', '<0x4g>', '▁', '▁▁x',
           'Ġ', 'Ċ', 'ĠĠ', 'âĢ¨']
    puncts = list('!"#$%&\'()*+,-./:;<=>?@[\\]^_`{|}~') + ['«', '»', '¿', '¡', '§', '¶', '†', '‡', '•', '°',
                                                           '±', '×', '÷', '∑', '∞', '≠', '≤', '≥', '√', '∫']
    for _ in range(1500):
        parts = []
        for _ in range(rng.randint(1, 14)):
            r = rng.random()
            if r < 0.3:
                parts.append(str(rng.randint(0, 10 ** rng.randint(1, 12))))
            elif r < 0.4:
                parts.append('%.*f' % (rng.randint(0, 6), rng.uniform(-1e4, 1e4)))
            elif r < 0.6:
                parts.append(''.join(rng.choice(puncts) for _ in range(rng.randint(1, 5))))
            elif r < 0.7:
                parts.append(rng.choice(["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'LL", "’s"]))
            else:
                parts.append(rng.choice(EN_WORDS))
            parts.append(rng.choice(['', ' ', ' ', ', ', '\t']))
        out.append(''.join(parts))
    return out


def long_word_lines(rng):
    """Words without spaces: five of 10000 characters, five of 4000."""
    n, m = 10000, 4000
    alnum = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/'
    return [
        'a' * n,
        ''.join(rng.choice('abcdefghijklmnopqrstuvwxyz') for _ in range(n)),
        ''.join(rng.choice('0123456789') for _ in range(n)),
        ''.join(rng.choice(ZH_WORDS) for _ in range(n // 2))[:n],
        ''.join(rng.choice(['🙂', 'é', 'ß', 'ж', '字', '_']) for _ in range(n)),
        ''.join(rng.choice(alnum) for _ in range(m)),
        '-' * m,
        'the' * (m // 3),
        ' ' + 'x' * m,
        ''.join(rng.choice(EN_WORDS) for _ in range(m // 3))[:m],
    ]


def random_unicode_lines(rng):
    out = []
    for _ in range(300):
        s = []
        for _ in range(rng.randint(1, 30)):
            r = rng.random()
            if r < 0.5:
                c = rng.randint(0x80, 0xFFFF)
            elif r < 0.6:
                c = rng.randint(0x10000, 0x10FFFF)
            elif r < 0.7:
                c = rng.choice([0xFFFE, 0xFFFF, 0x10FFFF, 0xFDD0, 0xE000, 0xF8FF, 0xF0000, 0x1FFFE])
            else:
                c = rng.randint(0x20, 0x7E)
            if 0xD800 <= c <= 0xDFFF:
                c = 0xFFFD
            s.append(chr(c))
        out.append(''.join(s))
    return out


def invalid_utf8_lines(rng):
    """Raw byte strings that are not valid UTF-8."""
    bad = [b'\x80', b'\xbf', b'\x80\x80\x80', b'\xc0', b'\xc1\xbf', b'\xc0\x80', b'\xc2', b'\xe0\x80\x80',
           b'\xe0\x9f\xbf', b'\xe4\xb8', b'\xe4', b'\xed\xa0\x80', b'\xed\xbf\xbf', b'\xed\xa0\x80\xed\xb0\x80',
           b'\xf0\x80\x80\x80', b'\xf0\x8f\xbf\xbf', b'\xf0\x9f\x98', b'\xf0\x9f', b'\xf0', b'\xf4\x90\x80\x80',
           b'\xf5\x80\x80\x80', b'\xf8\x88\x80\x80\x80', b'\xfc\x84\x80\x80\x80\x80', b'\xfe', b'\xff', b'\xfe\xff',
           b'\xff\xfe', b'\xe2\x82', b'\xe2\x28\xa1', b'\xc3\x28', b'\xa0\xa1', b'\xf0\x28\x8c\xbc',
           b'\xf0\x90\x28\xbc', b'\xf8\xa1\xa1\xa1\xa1', b'\xef\xbf', b'\xdf']
    good = [b'abc', b' ', b'hello world', '中文'.encode(), '😀'.encode(), b'\xef\xbf\xbd', b'\xf4\x8f\xbf\xbf',
            b'\xc2\x80', b'\xe0\xa0\x80', b'\xf0\x90\x80\x80', b'\xed\x9f\xbf', b'\xee\x80\x80', b'\n', b'\t', b'0']
    out = [b + tail for b in bad for tail in (b'', b'a', b' ', '中'.encode())]
    for _ in range(700):
        parts = []
        for _ in range(rng.randint(1, 20)):
            r = rng.random()
            if r < 0.35:
                parts.append(rng.choice(bad))
            elif r < 0.45:
                parts.append(bytes([rng.randint(0x80, 0xff)]))
            elif r < 0.55:
                # a valid multi-byte character cut short or with its tail replaced
                ch = chr(rng.choice([rng.randint(0x80, 0x7ff), rng.randint(0x800, 0xd7ff),
                                     rng.randint(0x10000, 0x10ffff)])).encode()
                cut = rng.randint(1, len(ch) - 1)
                parts.append(ch[:cut])
            else:
                parts.append(rng.choice(good))
        s = b''.join(parts)
        try:
            s.decode('utf-8')
            s += b'\xff'
        except UnicodeDecodeError:
            pass
        out.append(s)
    for _ in range(60):                  # random bytes
        out.append(bytes(rng.randint(0, 255) for _ in range(rng.randint(1, 60))))
    return [s for s in out if not is_utf8(s)]


def special_token_lines():
    return [
        'hello<|endoftext|>world', '<|endoftext|>', '<|endoftext|><|endoftext|>', ' <|endoftext|> ',
        '<|pad|><|pad|> <|user|>x', '<|user|>', 'a<|user|>b<|endoftext|>c<|pad|>d', '<<|user|>>',
        '<|user|<|endoftext|>|>', '<|endoftext|' + '>', 'text\n<|endoftext|>\n\nmore', '<|endoftext|>中文😀',
        '<s>text</s>', '<s>', '</s>', '<unk>', '<s><s></s>', ' <s> hello </s> ', '<s>\n</s>',
        'a<unk>b', '<s>中文</s>', '<|user|><s>', 'x</s>y<s>z', '</s></s>', '< s>', '<s >', '<S>',
        '<0x41>', 'byte <0xE4><0xB8><0xAD> tokens as text', '<s> ', ' <s>', '<s>  two spaces',
        '<s>\u2581already', '\u2581\u2581<s>\u2581',
    ]


def is_utf8(b):
    try:
        b.decode('utf-8')
        return True
    except UnicodeDecodeError:
        return False


def build_corpus(shakespeare):
    """[(kind, bytes)], at least CORPUS_MIN_BYTES in total.  Every kind draws from its own
    seeded generator; the code lines (which follow the repository's files) come last."""
    def rng(kind):
        return random.Random('%d-%s' % (SEED, kind))
    parts = [('whitespace', whitespace_lines(rng('whitespace'))), ('cjk', cjk_lines(rng('cjk'))),
             ('emoji', emoji_lines(rng('emoji'))), ('combining', combining_lines(rng('combining'))),
             ('control', control_lines(rng('control'))), ('numbers', number_lines(rng('numbers'))),
             ('long', long_word_lines(rng('long'))), ('unicode', random_unicode_lines(rng('unicode'))),
             ('special', special_token_lines())]
    corpus = [(kind, s.encode('utf-8')) for kind, lines in parts for s in lines]
    corpus += [('invalid', b) for b in invalid_utf8_lines(rng('invalid'))]
    corpus += [('code', s.encode('utf-8')) for s in code_lines(rng('code'))]
    size = sum(len(b) for _, b in corpus)
    prose = shakespeare_lines(shakespeare, rng('prose'), max(PROSE_BYTES, CORPUS_MIN_BYTES - size))
    return [('prose', s.encode('utf-8')) for s in prose] + corpus


# --------------------------------------------------------------------------------------------
# Tokenizers
# --------------------------------------------------------------------------------------------

def train_bytelevel(texts):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=True)
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=BYTELEVEL_SPECIAL, show_progress=False,
                                  initial_alphabet=sorted(pre_tokenizers.ByteLevel.alphabet()))
    tok.train_from_iterator(texts, trainer=trainer)
    tok.add_tokens([AddedToken(BYTELEVEL_ADDED, special=False, normalized=True)])
    j = json.loads(tok.to_str())
    # As GPT-2 and GPT-NeoX files spell them (the decoder ignores these fields).
    for k in ('decoder', 'post_processor'):
        j[k].update(add_prefix_space=False, trim_offsets=True, use_regex=True)
    return j


def sp_normalizer():
    return normalizers.Sequence([normalizers.Prepend(SP), normalizers.Replace(' ', SP)])


def train_spbpe(texts):
    """BPE on ▁-joined text, then Llama's layout: specials, the 256 <0xNN> byte tokens, the rest."""
    norm = sp_normalizer()
    counts = {}
    for t in texts:
        for c in norm.normalize_str(t):
            counts[c] = counts.get(c, 0) + 1
    alphabet = sorted((c for c in counts if counts[c] >= 2), key=lambda c: (-counts[c], ord(c)))[:SP_ALPHABET_MAX]

    tok = Tokenizer(models.BPE(unk_token='<unk>'))
    tok.normalizer = norm
    # Training only: split before runs of ▁ so that, as in SentencePiece, pieces start at word
    # boundaries ("▁▁▁▁return" -> "▁▁▁", "▁return").  The saved tokenizer has no pre-tokenizer.
    tok.pre_tokenizer = pre_tokenizers.Split(Regex('%s?[^%s]+|%s+(?![^%s])|%s+' % ((SP,) * 5)), 'isolated')
    # initial_alphabet with limit_alphabet = its length keeps exactly these characters (it is
    # deterministic; a plain limit_alphabet breaks count ties in hash order).
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE - 256, special_tokens=SP_SPECIAL, show_progress=False,
                                  initial_alphabet=alphabet, limit_alphabet=len(alphabet))
    tok.train_from_iterator(texts, trainer=trainer)
    j = json.loads(tok.to_str())

    vocab = j['model']['vocab']
    inv = sorted(vocab.items(), key=lambda kv: kv[1])
    assert [k for k, _ in inv[:3]] == SP_SPECIAL, inv[:3]
    byte_tokens = ['<0x%02X>' % b for b in range(256)]
    assert not set(byte_tokens) & set(vocab), 'a trained token collides with a byte token'
    new_vocab = {k: i for i, (k, _) in enumerate(inv[:3])}
    for b in byte_tokens:
        new_vocab[b] = len(new_vocab)
    for k, _ in inv[3:]:
        new_vocab[k] = len(new_vocab)
    assert len(new_vocab) == VOCAB_SIZE, len(new_vocab)
    j['model'].update(vocab=new_vocab, byte_fallback=True, fuse_unk=True, unk_token='<unk>')
    j['pre_tokenizer'] = None
    tok = Tokenizer.from_str(json.dumps(j))
    tok.decoder = decoders.Sequence([decoders.Replace(SP, ' '), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(content=' ', left=1, right=0)])
    tok.post_processor = processors.TemplateProcessing(single='<s> $A', pair='<s> $A <s> $B',
                                                       special_tokens=[('<s>', 1)])
    return json.loads(tok.to_str())


def metaspace_variant(sp):
    """spbpe with the Metaspace pre-tokenizer and decoder, and no normalizer; merges written in
    the older "left right" string form, which many published tokenizer.json files use."""
    tok = Tokenizer.from_str(json.dumps(sp))
    tok.normalizer = None
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SP, prepend_scheme='first', split=False)
    tok.decoder = decoders.Metaspace(replacement=SP, prepend_scheme='first', split=False)
    j = json.loads(tok.to_str())
    merges = j['model']['merges']
    assert all(' ' not in a and ' ' not in b for a, b in merges)
    j['model']['merges'] = ['%s %s' % (a, b) for a, b in merges]
    return j


# --------------------------------------------------------------------------------------------
# Expectations
# --------------------------------------------------------------------------------------------

def decode_sequences(tok, corpus_ids, rng):
    """200 id sequences: uniform over the whole vocabulary, byte-level/byte-fallback tokens
    spelling (possibly cut) UTF-8 characters, and slices of real encodings cut anywhere."""
    vocab = tok.get_vocab(with_added_tokens=True)
    n = tok.get_vocab_size(with_added_tokens=True)
    assert sorted(vocab.values()) == list(range(n))
    byte_ids = [vocab['<0x%02X>' % b] for b in range(256)] if '<0x00>' in vocab else None
    if byte_ids is None:
        b2c = bytelevel_bytes_to_chars()
        byte_ids = [vocab[b2c[b]] for b in range(256)]
    long_ids = [ids for ids in corpus_ids if len(ids) >= 40]
    out = []
    for k in range(200):
        length = rng.randint(1, 40)
        kind = k % 4
        if kind == 0:
            ids = [rng.randrange(n) for _ in range(length)]
        elif kind in (1, 2):
            ids = []
            while len(ids) < length:
                r = rng.random()
                if r < 0.6:
                    c = chr(rng.choice([rng.randint(0x80, 0x7ff), rng.randint(0x800, 0xffff),
                                        rng.randint(0x10000, 0x10ffff), rng.randint(0x4e00, 0x9fff)]))
                    if 0xd800 <= ord(c) <= 0xdfff:
                        c = '\u20ac'
                    bs = c.encode()
                    if kind == 2 and rng.random() < 0.5:
                        bs = bs[:rng.randint(1, len(bs))] if rng.random() < 0.7 else bs[rng.randint(1, len(bs) - 1):]
                    ids += [byte_ids[b] for b in bs]
                elif r < 0.7:
                    ids.append(byte_ids[rng.randrange(256)])
                else:
                    ids.append(rng.randrange(n))
            ids = ids[:length]
        else:
            src = rng.choice(long_ids)
            start = rng.randrange(len(src) - length + 1)
            ids = src[start:start + length]
        out.append(ids)
    return out


def bytelevel_bytes_to_chars():
    bs = list(range(ord('!'), ord('~') + 1)) + list(range(0xa1, 0xac + 1)) + list(range(0xae, 0xff + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def stream_decode(tok, ids, skip):
    ds = decoders.DecodeStream(skip_special_tokens=skip)
    chunks = []
    for i in ids:
        try:
            chunks.append(ds.step(tok, i))
        except Exception as e:           # tokenizers raises on an inconsistent prefix
            return chunks, str(e).split('\n')[0]
    return chunks, None


def unicode_classes():
    """Code point ranges of \\p{L}, \\p{N} and \\s as the ByteLevel regex sees them."""
    cps = [c for c in range(0x110000) if not 0xd800 <= c <= 0xdfff]
    text = ''.join(map(chr, cps))
    res = {}
    for name, pat in (('L', r'\p{L}'), ('N', r'\p{N}'), ('s', r'\s')):
        kept = bytearray(len(cps))      # 1 = not matched
        pieces = pre_tokenizers.Split(Regex(pat), 'removed').pre_tokenize_str(text)
        for _, (a, b) in pieces:
            kept[a:b] = b'\x01' * (b - a)
        ranges = []
        for idx, cp in enumerate(cps):
            if not kept[idx]:
                if ranges and ranges[-1][1] == cp - 1:
                    ranges[-1][1] = cp
                else:
                    ranges.append([cp, cp])
        res[name] = ranges
    return res


def dumps(obj):
    return json.dumps(obj, ensure_ascii=False, separators=(',', ':'))


def default_data():
    for p in (os.path.join(ROOT, 'data', 'tinyshakespeare.txt'),):
        if os.path.exists(p):
            return p
    return os.path.join(ROOT, 'data', 'tinyshakespeare.txt')


def expectations_for_existing(out, name, path):
    """Expectations for a tokenizer.json we did not train (the shipped model's),
    over the committed corpus, in the same formats as the trained ones."""
    with open(os.path.join(out, 'corpus.jsonl'), encoding='utf-8') as f:
        corpus = [base64.b64decode(json.loads(line)['b64']) for line in f if line.strip()]
    texts = [b.decode('utf-8', 'replace') for b in corpus]
    tok = Tokenizer.from_file(path)
    all_ids = [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]
    decoded = tok.decode_batch(all_ids, skip_special_tokens=False)
    with open(os.path.join(out, name + '.expect.jsonl'), 'w', encoding='utf-8') as f:
        for line, (text, ids, dec) in enumerate(zip(texts, all_ids, decoded)):
            rec = {'line': line, 'ids': ids}
            if dec != text:
                rec['decoded'] = dec
            f.write(dumps(rec) + '\n')
    rng = random.Random(SEED + 1)
    with open(os.path.join(out, name + '.decode.jsonl'), 'w', encoding='utf-8') as f:
        for ids in decode_sequences(tok, all_ids, rng):
            rec = {'ids': ids, 'decoded': tok.decode(ids, skip_special_tokens=False),
                   'decoded_skip_special': tok.decode(ids, skip_special_tokens=True)}
            chunks, err = stream_decode(tok, ids, False)
            rec['stream'] = chunks
            if err is not None:
                rec['stream_error'] = err
            f.write(dumps(rec) + '\n')
    log('%s: %d lines, %d tokens' % (name, len(all_ids), sum(len(i) for i in all_ids)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--out', default=os.path.join(ROOT, 'tests', 'fixtures', 'tokenizer'))
    ap.add_argument('--data', default=default_data(),
                    help='tinyshakespeare.txt (default data/tinyshakespeare.txt)')
    ap.add_argument('--existing', metavar='NAME=TOKENIZER_JSON', action='append', default=[],
                    help='only write NAME.expect.jsonl and NAME.decode.jsonl for an existing '
                         'tokenizer.json (e.g. demo=models/tokenizer.json) over the corpus '
                         'already in --out; nothing else is regenerated')
    args = ap.parse_args()
    if args.existing:
        for spec in args.existing:
            name, path = spec.split('=', 1)
            expectations_for_existing(args.out, name, path)
        return
    os.makedirs(args.out, exist_ok=True)
    t0 = time.time()
    version = md.version('tokenizers')

    with open(args.data, encoding='utf-8') as f:
        shakespeare = f.read()
    corpus = build_corpus(shakespeare)
    texts = [b.decode('utf-8', 'replace') for _, b in corpus]
    with open(os.path.join(args.out, 'corpus.jsonl'), 'w', encoding='utf-8') as f:
        for kind, b in corpus:
            f.write(dumps({'b64': base64.b64encode(b).decode('ascii')}) + '\n')
    kinds = {}
    for kind, b in corpus:
        k = kinds.setdefault(kind, [0, 0])
        k[0] += 1
        k[1] += len(b)
    log('corpus: %d lines, %d bytes  %s' % (len(corpus), sum(len(b) for _, b in corpus),
                                           ', '.join('%s %d/%d' % (k, v[0], v[1]) for k, v in kinds.items())))

    # Training text: all of tinyshakespeare plus the valid, ordinary-length non-prose lines.
    train = [ln for ln in shakespeare.split('\n') if ln] + \
        [t for (kind, b), t in zip(corpus, texts) if kind not in ('prose', 'long', 'invalid', 'special')]
    bl = train_bytelevel(train)
    log('bytelevel trained (%.1fs)' % (time.time() - t0))
    sp = train_spbpe(train)
    log('spbpe trained (%.1fs)' % (time.time() - t0))
    specs = [('bytelevel', bl), ('spbpe', sp), ('spbpe_metaspace', metaspace_variant(sp))]

    spbpe_ids = None
    for name, j in specs:
        path = os.path.join(args.out, name + '.json')
        with open(path, 'w', encoding='utf-8') as f:
            f.write(json.dumps(j, ensure_ascii=False, indent=2) + '\n')
        tok = Tokenizer.from_file(path)     # everything below uses the file as written
        assert json.loads(tok.to_str())['model']['vocab'] == j['model']['vocab']
        encs = tok.encode_batch(texts, add_special_tokens=False)
        all_ids = [e.ids for e in encs]
        decoded = tok.decode_batch(all_ids, skip_special_tokens=False)
        if name == 'spbpe':
            spbpe_ids = all_ids
        ndiff = nrec = 0
        with open(os.path.join(args.out, name + '.expect.jsonl'), 'w', encoding='utf-8') as f:
            for line, (text, ids, dec) in enumerate(zip(texts, all_ids, decoded)):
                # spbpe_metaspace has the model of spbpe: only the lines it encodes differently
                # and every METASPACE_EVERY-th line, to keep the fixtures small.
                if name == 'spbpe_metaspace' and ids == spbpe_ids[line] and line % METASPACE_EVERY:
                    continue
                rec = {'line': line, 'ids': ids}
                if dec != text:
                    rec['decoded'] = dec
                    ndiff += 1
                f.write(dumps(rec) + '\n')
                nrec += 1
        ntok = sum(len(i) for i in all_ids)
        if name == 'bytelevel':
            assert ndiff == 0, 'byte-level decode should reproduce every line'
        log('%s: %d tokens, %d lines written, %d decode to something else' % (name, ntok, nrec, ndiff))

        rng = random.Random(SEED + 1)
        with open(os.path.join(args.out, name + '.decode.jsonl'), 'w', encoding='utf-8') as f:
            for ids in decode_sequences(tok, all_ids, rng):
                rec = {'ids': ids, 'decoded': tok.decode(ids, skip_special_tokens=False),
                       'decoded_skip_special': tok.decode(ids, skip_special_tokens=True)}
                chunks, err = stream_decode(tok, ids, False)
                rec['stream'] = chunks
                if err is not None:
                    rec['stream_error'] = err
                f.write(dumps(rec) + '\n')

    with open(os.path.join(args.out, 'unicode_classes.json'), 'w', encoding='utf-8') as f:
        cls = unicode_classes()
        f.write('{"source":%s,\n' % dumps('tokenizers %s, ByteLevel pre-tokenizer regex (Oniguruma); '
                                          'inclusive code point ranges, surrogates excluded' % version))
        f.write(',\n'.join('%s:%s' % (dumps(k), dumps(v)) for k, v in cls.items()) + '}\n')

    total = 0
    for fn in sorted(os.listdir(args.out)):
        sz = os.path.getsize(os.path.join(args.out, fn))
        total += sz
        log('  %-28s %9d' % (fn, sz))
    log('total %d bytes, %.1fs' % (total, time.time() - t0))


if __name__ == '__main__':
    main()
