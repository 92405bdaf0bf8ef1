#!/usr/bin/env python3
"""MultiPL-E's real problem files through `multipl-moe eval` (issue 25, point 6 and acceptance).

    python3 scripts/multipl_e_acceptance.py DIR [--bin PATH]

DIR holds MultiPL-E's HumanEval files of the six languages as they are distributed
(`humaneval-{py,java,cpp,rs,go,rb}-reworded.jsonl`, the Hugging Face dataset's rows; not part of
this repository: their licence forbids training on them). `eval --problems DIR --limit 3` reads
the six files unchanged and scores their first three problems (HumanEval 0, 100 and 101 in every
language) with completions written by hand for this script:

1. correct ones: every language must score 3/3;
2. hostile ones: a wrong answer (must fail), an endless loop (must be `Timeout` within the
   language's limit plus the compile time) and a program that writes a file into the host's
   /tmp and $HOME and leaves a `sleep` process behind (must fail, and neither the files nor the
   process may outlive the run).

Prints both tables and exits non-zero when any expectation fails. Needs bubblewrap and the six
toolchains (python3, g++, rustc, go, javac with libjavatuples-java, ruby) and
`cargo build --release` (or --bin).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
P0, P100, P101 = "HumanEval_0_has_close_elements", "HumanEval_100_make_a_pile", \
    "HumanEval_101_words_string"
MARK = f"multipl-moe-acceptance-{os.getpid()}"

# Completions after each file's prompt, which ends with the function's signature (and, for
# Python, its docstring), up to the file's tests.
CORRECT = {
    "py": {
        P0: "    return any(abs(a - b) < threshold\n"
            "               for i, a in enumerate(numbers) for b in numbers[i + 1:])\n",
        P100: "    return [n + 2 * i for i in range(n)]\n",
        P101: "    return s.replace(',', ' ').split()\n",
    },
    "rb": {
        P0: "  numbers.combination(2).any? { |a, b| (a - b).abs < threshold }\nend\n",
        P100: "  (0...n).map { |i| n + 2 * i }\nend\n",
        P101: "  s.tr(',', ' ').split\nend\n",
    },
    "rs": {
        P0: "    for i in 0..numbers.len() {\n        for j in i + 1..numbers.len() {\n"
            "            if (numbers[i] - numbers[j]).abs() < threshold {\n"
            "                return true;\n            }\n        }\n    }\n    false\n",
        P100: "    (0..n).map(|i| n + 2 * i).collect()\n",
        P101: "    s.replace(',', \" \").split_whitespace().map(String::from).collect()\n",
    },
    "go_test.go": {
        P0: "    for i := range numbers {\n        for j := i + 1; j < len(numbers); j++ {\n"
            "            d := numbers[i] - numbers[j]\n"
            "            if d < threshold && -d < threshold {\n                return true\n"
            "            }\n        }\n    }\n    return false\n}\n",
        P100: "    out := []int{}\n    for i := 0; i < n; i++ {\n        out = append(out, n+2*i)\n"
              "    }\n    return out\n}\n",
        P101: "    out := []string{}\n    word := \"\"\n    for _, c := range s + \" \" {\n"
              "        if c == ' ' || c == ',' {\n            if word != \"\" {\n"
              "                out = append(out, word)\n            }\n            word = \"\"\n"
              "        } else {\n            word += string(c)\n        }\n    }\n"
              "    return out\n}\n",
    },
    "java": {
        P0: "        for (int i = 0; i < numbers.size(); i++)\n"
            "            for (int j = i + 1; j < numbers.size(); j++)\n"
            "                if (Math.abs(numbers.get(i) - numbers.get(j)) < threshold) return true;\n"
            "        return false;\n",
        P100: "        ArrayList<Long> out = new ArrayList<>();\n"
              "        for (long i = 0; i < n; i++) out.add(n + 2 * i);\n        return out;\n",
        P101: "        ArrayList<String> out = new ArrayList<>();\n"
              "        for (String w : s.replace(',', ' ').split(\" \")) if (!w.isEmpty()) out.add(w);\n"
              "        return out;\n",
    },
    "cpp": {
        P0: "    for (size_t i = 0; i < numbers.size(); i++)\n"
            "        for (size_t j = i + 1; j < numbers.size(); j++)\n"
            "            if (std::fabs(numbers[i] - numbers[j]) < threshold) return true;\n"
            "    return false;\n",
        P100: "    std::vector<long> out;\n    for (long i = 0; i < n; i++) out.push_back(n + 2 * i);\n"
              "    return out;\n",
        P101: "    std::vector<std::string> out;\n    std::string word;\n"
              "    for (char c : s + \" \") {\n        if (c == ' ' || c == ',') {\n"
              "            if (!word.empty()) out.push_back(word);\n            word.clear();\n"
              "        } else {\n            word += c;\n        }\n    }\n    return out;\n",
    },
}

# A wrong answer, an endless loop, and a program that tries to leave traces on the host.
HOSTILE = {
    "py": {
        P0: "    return not any(abs(a - b) < threshold\n"
            "                   for i, a in enumerate(numbers) for b in numbers[i + 1:])\n",
        P100: "    while True:\n        pass\n",
        P101: f"    import os, subprocess\n"
              f"    for d in ('/tmp', os.path.expanduser('~')):\n"
              f"        open(os.path.join(d, '{MARK}-py'), 'w').write('x')\n"
              f"    subprocess.Popen(['sleep', '300', '{MARK}'])\n    return []\n",
    },
    "rb": {
        P0: "  false\nend\n",
        P100: "  loop { }\nend\n",
        P101: f"  ['/tmp', Dir.home].each {{ |d| File.write(File.join(d, '{MARK}-rb'), 'x') }}\n"
              f"  spawn('sleep', '300', '{MARK}')\n  []\nend\n",
    },
    "rs": {
        P0: "    numbers.is_empty() && threshold > 0.0\n",
        P100: "    loop {}\n",
        P101: f"    let home = std::env::var(\"HOME\").unwrap_or_default();\n"
              f"    for d in [\"/tmp\".to_string(), home] {{\n"
              f"        let _ = std::fs::write(format!(\"{{d}}/{MARK}-rs\"), \"x\");\n    }}\n"
              f"    let _ = std::process::Command::new(\"sleep\").args([\"300\", \"{MARK}\"]).spawn();\n"
              f"    vec![]\n",
    },
    "go_test.go": {
        P0: "    return false\n}\n",
        P100: "    for {\n    }\n}\n",
        P101: "    return []string{\"wrong\"}\n}\n",
    },
    "java": {
        P0: "        return false;\n",
        P100: "        while (true) { }\n",
        P101: f"        try {{\n"
              f"            for (String d : new String[] {{\"/tmp\", System.getProperty(\"user.home\")}})\n"
              f"                new FileWriter(d + \"/{MARK}-java\").close();\n"
              f"            new ProcessBuilder(\"sleep\", \"300\", \"{MARK}\").start();\n"
              f"        }} catch (Exception e) {{ }}\n"
              f"        return new ArrayList<String>();\n",
    },
    "cpp": {
        P0: "    return false;\n",
        P100: "    while (true) { }\n",
        P101: f"    for (std::string d : {{std::string(\"/tmp\"), std::string(getenv(\"HOME\") ? getenv(\"HOME\") : \"/\")}})\n"
              f"        std::ofstream(d + \"/{MARK}-cpp\") << \"x\";\n"
              f"    if (system(\"sleep 300 {MARK} &\")) {{ }}\n"
              f"    return {{}};\n",
    },
}

# The statuses the hostile set must get, by problem (Go's endless loop is a timeout too).
HOSTILE_STATUS = {P0: {"Exception"}, P100: {"Timeout"}, P101: {"Exception"}}


def records(table):
    return [{"name": name, "language": lang, "completion": text}
            for lang, by_name in table.items() for name, text in by_name.items()]


def run_eval(binary, problems, table, out):
    path = os.path.join(out + ".jsonl")
    with open(path, "w") as f:
        for r in records(table):
            f.write(json.dumps(r) + "\n")
    start = time.time()
    proc = subprocess.run([binary, "eval", "--problems", problems, "--limit", "3",
                           "--completions", path, "--out", out], capture_output=True, text=True)
    print(proc.stdout, end="")
    if proc.returncode != 0:
        sys.exit(f"eval failed:\n{proc.stderr}")
    with open(os.path.join(out, "results.json")) as f:
        return json.load(f), time.time() - start


def leftovers():
    found = []
    for d in ("/tmp", os.path.expanduser("~")):
        found += [os.path.join(d, n) for n in os.listdir(d) if n.startswith(MARK)]
    procs = subprocess.run(["pgrep", "-f", MARK], capture_output=True, text=True).stdout.split()
    return found, [p for p in procs if int(p) != os.getpid()]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "multipl-moe"))
    args = ap.parse_args()
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        print("== correct completions (first three problems of each language)")
        report, secs = run_eval(args.bin, args.dir, CORRECT, os.path.join(tmp, "correct"))
        print(f"wall time {secs:.0f} s\n")
        for score in report["scores"]:
            if (score["passed"], score["total"]) != (3, 3):
                failures.append(f"correct: {score['language']} {score['passed']}/{score['total']}")
        if len(report["scores"]) != 6:
            failures.append(f"correct: {len(report['scores'])} languages scored, not 6")

        print("== hostile completions (wrong answer, endless loop, traces on the host)")
        report, secs = run_eval(args.bin, args.dir, HOSTILE, os.path.join(tmp, "hostile"))
        print(f"wall time {secs:.0f} s")
        for r in report["results"]:
            want = HOSTILE_STATUS[r["name"]]
            if r["status"] not in want:
                failures.append(f"hostile: {r['language']} {r['name']}: {r['status']}, "
                                f"expected {' or '.join(sorted(want))}")
        for score in report["scores"]:
            if score["passed"] != 0:
                failures.append(f"hostile: {score['language']} passed {score['passed']}")
        files, procs = leftovers()
        if files or procs:
            failures.append(f"left on the host: files {files}, processes {procs}")
        else:
            print(f"left on the host: nothing (no {MARK}* file in /tmp or $HOME, no process)")
    if failures:
        print("\nFAILED:\n  " + "\n  ".join(failures))
        sys.exit(1)
    print("\nall expectations met")


if __name__ == "__main__":
    main()
