//! The deterministic generator of the embedded corpus: functions, loops, types and each
//! language's idioms, with names and constants drawn from a seeded PRNG.

use multipl_moe_core::rng::Rng;

use crate::data::corpus::{Corpus, Document, Language};

const NOUNS: &[&str] = &[
    "value", "count", "total", "item", "score", "price", "index", "node", "word", "line", "user",
    "order", "point", "size", "limit", "step",
];
const VERBS: &[&str] = &[
    "compute", "find", "sum", "count", "filter", "scale", "merge", "check",
];
const TYPES: &[&str] = &["Point", "Order", "Account", "Matrix", "Token", "Stack"];

struct Names {
    f: String,
    a: &'static str,
    b: &'static str,
    ty: &'static str,
    n: usize,
    k: usize,
}

fn names(rng: &mut Rng) -> Names {
    let verb = rng.pick(VERBS);
    let noun = rng.pick(NOUNS);
    let a = rng.pick(NOUNS);
    let mut b = rng.pick(NOUNS);
    if a == b {
        b = "other";
    }
    Names {
        f: format!("{verb}_{noun}"),
        a,
        b,
        ty: rng.pick(TYPES),
        n: 2 + rng.below(50),
        k: 1 + rng.below(9),
    }
}

fn camel(s: &str) -> String {
    let mut out = String::new();
    for (i, part) in s.split('_').enumerate() {
        let mut c = part.chars();
        if let Some(first) = c.next() {
            if i == 0 {
                out.push(first);
            } else {
                out.extend(first.to_uppercase());
            }
            out.extend(c);
        }
    }
    out
}

/// One document of 2–4 snippets in `language`.
pub fn document(language: Language, rng: &mut Rng) -> String {
    let parts = 2 + rng.below(3);
    (0..parts)
        .map(|_| {
            let n = names(rng);
            let which = rng.below(4);
            match language {
                Language::Python => python(&n, which),
                Language::Java => java(&n, which),
                Language::Cpp => cpp(&n, which),
                Language::Rust => rust(&n, which),
                Language::Go => go(&n, which),
                Language::Ruby => ruby(&n, which),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn python(n: &Names, which: usize) -> String {
    let Names {
        f,
        a,
        b,
        ty,
        n: c,
        k,
    } = n;
    match which {
        0 => format!(
            "def {f}({a}s, {b}):\n    result = 0\n    for {a} in {a}s:\n        if {a} % {k} == 0:\n            result += {a} * {b}\n    return result\n"
        ),
        1 => format!(
            "class {ty}:\n    def __init__(self, {a}, {b}):\n        self.{a} = {a}\n        self.{b} = {b}\n\n    def {f}(self):\n        return self.{a} + self.{b} * {k}\n"
        ),
        2 => format!("def {f}(items):\n    return [x * {k} for x in items if x > {c}]\n"),
        _ => format!(
            "def {f}({a}):\n    seen = {{}}\n    for i, x in enumerate({a}):\n        seen[x] = seen.get(x, 0) + i\n    return sorted(seen.items())[:{c}]\n"
        ),
    }
}

fn java(n: &Names, which: usize) -> String {
    let Names {
        f,
        a,
        b,
        ty,
        n: c,
        k,
    } = n;
    let f = camel(f);
    match which {
        0 => format!(
            "public static int {f}(int[] {a}s, int {b}) {{\n    int result = 0;\n    for (int {a} : {a}s) {{\n        if ({a} % {k} == 0) {{\n            result += {a} * {b};\n        }}\n    }}\n    return result;\n}}\n"
        ),
        1 => format!(
            "public class {ty} {{\n    private final int {a};\n    private final int {b};\n\n    public {ty}(int {a}, int {b}) {{\n        this.{a} = {a};\n        this.{b} = {b};\n    }}\n\n    public int {f}() {{\n        return {a} + {b} * {k};\n    }}\n}}\n"
        ),
        2 => format!(
            "public static List<Integer> {f}(List<Integer> items) {{\n    return items.stream().filter(x -> x > {c}).map(x -> x * {k}).collect(Collectors.toList());\n}}\n"
        ),
        _ => format!(
            "public static Map<String, Integer> {f}(List<String> {a}s) {{\n    Map<String, Integer> counts = new HashMap<>();\n    for (String {a} : {a}s) {{\n        counts.merge({a}, {k}, Integer::sum);\n    }}\n    return counts;\n}}\n"
        ),
    }
}

fn cpp(n: &Names, which: usize) -> String {
    let Names {
        f,
        a,
        b,
        ty,
        n: c,
        k,
    } = n;
    match which {
        0 => format!(
            "int {f}(const std::vector<int>& {a}s, int {b}) {{\n    int result = 0;\n    for (int {a} : {a}s) {{\n        if ({a} % {k} == 0) result += {a} * {b};\n    }}\n    return result;\n}}\n"
        ),
        1 => format!(
            "struct {ty} {{\n    int {a};\n    int {b};\n    int {f}() const {{ return {a} + {b} * {k}; }}\n}};\n"
        ),
        2 => format!(
            "std::vector<int> {f}(const std::vector<int>& items) {{\n    std::vector<int> out;\n    std::copy_if(items.begin(), items.end(), std::back_inserter(out), [](int x) {{ return x > {c}; }});\n    return out;\n}}\n"
        ),
        _ => format!(
            "std::map<std::string, int> {f}(const std::vector<std::string>& {a}s) {{\n    std::map<std::string, int> counts;\n    for (const auto& {a} : {a}s) {{\n        counts[{a}] += {k};\n    }}\n    return counts;\n}}\n"
        ),
    }
}

fn rust(n: &Names, which: usize) -> String {
    let Names {
        f,
        a,
        b,
        ty,
        n: c,
        k,
    } = n;
    match which {
        0 => format!(
            "fn {f}({a}s: &[i64], {b}: i64) -> i64 {{\n    {a}s.iter()\n        .filter(|&&{a}| {a} % {k} == 0)\n        .map(|&{a}| {a} * {b})\n        .sum()\n}}\n"
        ),
        1 => format!(
            "#[derive(Debug, Clone)]\npub struct {ty} {{\n    pub {a}: i64,\n    pub {b}: i64,\n}}\n\nimpl {ty} {{\n    pub fn {f}(&self) -> i64 {{\n        self.{a} + self.{b} * {k}\n    }}\n}}\n"
        ),
        2 => format!(
            "fn {f}(items: Vec<u32>) -> Option<u32> {{\n    let mut best = None;\n    for x in items.into_iter().filter(|x| *x > {c}) {{\n        best = Some(best.map_or(x, |b: u32| b.max(x * {k})));\n    }}\n    best\n}}\n"
        ),
        _ => format!(
            "fn {f}({a}s: &[String]) -> HashMap<&str, usize> {{\n    let mut counts = HashMap::new();\n    for {a} in {a}s {{\n        *counts.entry({a}.as_str()).or_insert(0) += {k};\n    }}\n    counts\n}}\n"
        ),
    }
}

fn go(n: &Names, which: usize) -> String {
    let Names {
        f,
        a,
        b,
        ty,
        n: c,
        k,
    } = n;
    let f = camel(f);
    match which {
        0 => format!(
            "func {f}({a}s []int, {b} int) int {{\n\tresult := 0\n\tfor _, {a} := range {a}s {{\n\t\tif {a}%{k} == 0 {{\n\t\t\tresult += {a} * {b}\n\t\t}}\n\t}}\n\treturn result\n}}\n"
        ),
        1 => format!(
            "type {ty} struct {{\n\t{a} int\n\t{b} int\n}}\n\nfunc (p *{ty}) {f}() int {{\n\treturn p.{a} + p.{b}*{k}\n}}\n"
        ),
        2 => format!(
            "func {f}(items []int) ([]int, error) {{\n\tif len(items) == 0 {{\n\t\treturn nil, errors.New(\"empty\")\n\t}}\n\tout := make([]int, 0, len(items))\n\tfor _, x := range items {{\n\t\tif x > {c} {{\n\t\t\tout = append(out, x*{k})\n\t\t}}\n\t}}\n\treturn out, nil\n}}\n"
        ),
        _ => format!(
            "func {f}({a}s []string) map[string]int {{\n\tcounts := make(map[string]int)\n\tfor _, {a} := range {a}s {{\n\t\tcounts[{a}] += {k}\n\t}}\n\treturn counts\n}}\n"
        ),
    }
}

fn ruby(n: &Names, which: usize) -> String {
    let Names {
        f,
        a,
        b,
        ty,
        n: c,
        k,
    } = n;
    match which {
        0 => format!(
            "def {f}({a}s, {b})\n  {a}s.select {{ |{a}| ({a} % {k}).zero? }}.sum {{ |{a}| {a} * {b} }}\nend\n"
        ),
        1 => format!(
            "class {ty}\n  attr_reader :{a}, :{b}\n\n  def initialize({a}, {b})\n    @{a} = {a}\n    @{b} = {b}\n  end\n\n  def {f}\n    @{a} + @{b} * {k}\n  end\nend\n"
        ),
        2 => format!(
            "def {f}(items)\n  items.each_with_object([]) do |x, out|\n    out << x * {k} if x > {c}\n  end\nend\n"
        ),
        _ => format!(
            "def {f}({a}s)\n  {a}s.each_with_object(Hash.new(0)) {{ |{a}, counts| counts[{a}] += {k} }}\nend\n"
        ),
    }
}

/// The embedded default corpus: `per_language` generated documents in each language.
pub fn embedded(per_language: usize) -> Corpus {
    let mut documents = Vec::new();
    for (li, &language) in Language::ALL.iter().enumerate() {
        for i in 0..per_language {
            let mut rng = Rng(0x5EED ^ ((li as u64) << 32) ^ i as u64);
            documents.push(Document {
                language,
                text: document(language, &mut rng),
            });
        }
    }
    Corpus {
        documents,
        ..Corpus::default()
    }
}
