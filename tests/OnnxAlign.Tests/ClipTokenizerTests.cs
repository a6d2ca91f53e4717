using System.IO.Compression;
using System.Text.Json;
using OnnxAlign.Core;
using OnnxAlign.Model;

namespace OnnxAlign.Tests;

/// <summary>
/// The CLIP tokenizer against CLIP's own ids. The vocabulary is OpenAI CLIP's (MIT): <c>Data/clip_merges.txt.gz</c>
/// holds the first 48 894 merges of <c>bpe_simple_vocab_16e6.txt</c> (all CLIP uses), and the vocabulary is built from
/// them as CLIP's <c>simple_tokenizer.py</c> builds it. The expected ids are CLIP's published encodings (the same
/// numbers appear in Hugging Face's and open_clip's tests and in many ports), not this project's output.
/// </summary>
public class ClipTokenizerTests
{
    private static readonly Lazy<string> ClipFolder = new(BuildClipFolder);

    [Theory]
    [InlineData("a photo of a cat", new[] { 49406, 320, 1125, 539, 320, 2368, 49407 })]
    [InlineData("a photo of a dog", new[] { 49406, 320, 1125, 539, 320, 1929, 49407 })]
    [InlineData("Hello, world!", new[] { 49406, 3306, 267, 1002, 256, 49407 })]
    [InlineData("A PHOTO of  a Cat!", new[] { 49406, 320, 1125, 539, 320, 2368, 256, 49407 })]
    [InlineData("don't stop 42 times", new[] { 49406, 847, 713, 1691, 275, 273, 1661, 49407 })]
    [InlineData("a dog in the snow", new[] { 49406, 320, 1929, 530, 518, 2583, 49407 })]
    [InlineData("    a    photo  of  a cat    ", new[] { 49406, 320, 1125, 539, 320, 2368, 49407 })]
    [InlineData("", new[] { 49406, 49407 })]
    [InlineData("    \t\n", new[] { 49406, 49407 })]
    public void EncodesAsClipDoes(string text, int[] expected)
    {
        var tokenizer = ClipTokenizer.Load(ClipFolder.Value);
        var ids = tokenizer.Encode(text);
        Assert.Equal(77, ids.Length);
        Assert.Equal(expected, ids[..expected.Length]);
        // SD 1.x pads with the end token (no special_tokens_map here: the default).
        Assert.All(ids[expected.Length..], id => Assert.Equal(49407, id));
    }

    [Fact]
    public void LongPromptsKeepTheFirst75TokensAndTheEndToken()
    {
        var tokenizer = ClipTokenizer.Load(ClipFolder.Value);
        string text = string.Join(" ", Enumerable.Repeat("cat", 100));
        var ids = tokenizer.Encode(text, out int truncated);
        Assert.Equal(25, truncated);
        Assert.Equal(49406, ids[0]);
        Assert.All(ids[1..76], id => Assert.Equal(2368, id));
        Assert.Equal(49407, ids[76]);
    }

    [Fact]
    public void NonAsciiTextGoesThroughTheByteLevelMapping()
    {
        // "café" is c-a-f + the two UTF-8 bytes of é; every id must exist and the encoding must round-trip through the vocabulary.
        var tokenizer = ClipTokenizer.Load(ClipFolder.Value);
        var content = tokenizer.ContentIds("café");
        Assert.NotEmpty(content);
        var vocab = JsonSerializer.Deserialize<Dictionary<string, int>>(File.ReadAllText(Path.Combine(ClipFolder.Value, "vocab.json")))!;
        var byId = vocab.ToDictionary(p => p.Value, p => p.Key);
        string joined = string.Concat(content.Select(id => byId[id]));
        Assert.EndsWith("</w>", joined);
        var bytes = joined[..^4].Select(c => ByteOf[c]).ToArray();
        Assert.Equal("café", System.Text.Encoding.UTF8.GetString(bytes));
    }

    [Fact]
    public void PadTokenAndLengthComeFromTheFolder()
    {
        string dir = TestSupport.TempDirectory();
        foreach (string f in new[] { "vocab.json", "merges.txt" }) File.Copy(Path.Combine(ClipFolder.Value, f), Path.Combine(dir, f));
        // SD 2.x: pad with "!" (id 0); a shorter model_max_length.
        File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), """{ "model_max_length": 16, "pad_token": { "content": "!", "lstrip": false } }""");
        var tokenizer = ClipTokenizer.Load(dir);
        var ids = tokenizer.Encode("a cat");
        Assert.Equal(new[] { 49406, 320, 2368, 49407, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 }, ids);
    }

    [Fact]
    public void BadFoldersAreNamed()
    {
        string dir = TestSupport.TempDirectory();
        var e = Assert.Throws<ConfigException>(() => ClipTokenizer.Load(dir));
        Assert.Contains("vocab.json", e.Message);
        File.WriteAllText(Path.Combine(dir, "vocab.json"), """{ "a</w>": 0 }""");
        File.WriteAllText(Path.Combine(dir, "merges.txt"), "#version: 0.2\n");
        e = Assert.Throws<ConfigException>(() => ClipTokenizer.Load(dir));
        Assert.Contains("<|startoftext|>", e.Message);
    }

    /// <summary>GPT-2/CLIP's bytes_to_unicode: printable bytes map to themselves, the others to 256 + n in order.</summary>
    internal static char[] ByteToUnicode()
    {
        var bs = Enumerable.Range('!', '~' - '!' + 1).Concat(Enumerable.Range('¡', '¬' - '¡' + 1)).Concat(Enumerable.Range('®', 'ÿ' - '®' + 1)).ToList();
        var cs = bs.ToList();
        int n = 0;
        for (int b = 0; b < 256; b++)
            if (!bs.Contains(b)) { bs.Add(b); cs.Add(256 + n++); }
        var map = new char[256];
        for (int i = 0; i < 256; i++) map[bs[i]] = (char)cs[i];
        return map;
    }

    private static readonly Dictionary<char, byte> ByteOf = ByteToUnicode().Select((c, b) => (c, b)).ToDictionary(p => p.c, p => (byte)p.b);

    /// <summary>CLIP's vocabulary from its merges (simple_tokenizer.py): bytes, bytes + &lt;/w&gt;, each merge, the two special tokens.</summary>
    private static string BuildClipFolder()
    {
        string dir = TestSupport.TempDirectory();
        using var gz = new GZipStream(File.OpenRead(Path.Combine(TestSupport.RepositoryRoot, "tests", "OnnxAlign.Tests", "Data", "clip_merges.txt.gz")), CompressionMode.Decompress);
        using var reader = new StreamReader(gz, System.Text.Encoding.UTF8);
        var merges = reader.ReadToEnd().Split('\n').Skip(1).Where(l => l.Length > 0).Take(49152 - 256 - 2).ToList();
        // bytes_to_unicode's values in insertion order, i.e. the order of bs (printable bytes first).
        var bs = Enumerable.Range('!', '~' - '!' + 1).Concat(Enumerable.Range('¡', '¬' - '¡' + 1)).Concat(Enumerable.Range('®', 'ÿ' - '®' + 1)).ToList();
        for (int b = 0; b < 256; b++) if (!bs.Contains(b)) bs.Add(b);
        var map = ByteToUnicode();
        var vocab = bs.Select(b => map[b].ToString()).ToList();
        vocab.AddRange(vocab.Select(v => v + "</w>").ToList());
        vocab.AddRange(merges.Select(m => m.Replace(" ", "")));
        vocab.Add("<|startoftext|>");
        vocab.Add("<|endoftext|>");
        var ids = new Dictionary<string, int>();
        for (int i = 0; i < vocab.Count; i++) ids[vocab[i]] = i;
        File.WriteAllText(Path.Combine(dir, "vocab.json"), JsonSerializer.Serialize(ids));
        File.WriteAllLines(Path.Combine(dir, "merges.txt"), new[] { "#version: 0.2" }.Concat(merges));
        return dir;
    }
}
