using System.Globalization;
using System.Net;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;
using OnnxAlign.Core;

namespace OnnxAlign.Model;

/// <summary>
/// CLIP's byte-level BPE tokenizer (Radford et al. 2021; the <c>tokenizer/</c> folder of a Stable Diffusion export,
/// DESIGN §9), with Microsoft.ML.Tokenizers' BPE doing the merges. The text is cleaned as CLIP cleans it (HTML
/// entities unescaped, whitespace collapsed, NFC, lower-cased), split by CLIP's pattern (contractions, letter runs,
/// single digits, runs of other symbols), each piece's UTF-8 bytes mapped to printable characters (byte level) and
/// merged with the end-of-word marker <c>&lt;/w&gt;</c> on its last symbol. The ids are
/// <c>[start] + content[..MaxLength−2] + [end]</c>, padded to <see cref="MaxLength"/> with the pad token.
/// </summary>
/// <remarks>Thread-safe (immutable after loading).</remarks>
public sealed partial class ClipTokenizer
{
    /// <summary>CLIP's default sequence length (its text encoder's positions).</summary>
    public const int DefaultMaxLength = 77;

    private readonly BpeTokenizer _bpe;

    private ClipTokenizer(BpeTokenizer bpe, int maxLength, int startId, int endId, int padId, string source)
    {
        _bpe = bpe;
        MaxLength = maxLength;
        StartId = startId;
        EndId = endId;
        PadId = padId;
        Source = source;
    }

    /// <summary>Length of every encoding (start, content, end, padding).</summary>
    public int MaxLength { get; }

    /// <summary>Id of <c>&lt;|startoftext|&gt;</c>.</summary>
    public int StartId { get; }

    /// <summary>Id of <c>&lt;|endoftext|&gt;</c>.</summary>
    public int EndId { get; }

    /// <summary>Id of the padding token (<c>&lt;|endoftext|&gt;</c> in SD 1.x, <c>!</c> in SD 2.x: the folder says which).</summary>
    public int PadId { get; }

    /// <summary>The folder the tokenizer was read from.</summary>
    public string Source { get; }

    /// <summary>
    /// Reads a Hugging Face <c>CLIPTokenizer</c> folder: <c>vocab.json</c>, <c>merges.txt</c>, and when present
    /// <c>tokenizer_config.json</c> / <c>special_tokens_map.json</c> (pad token, <c>model_max_length</c>).
    /// </summary>
    /// <param name="directory">The folder.</param>
    /// <param name="maxLength">The sequence length; null takes <c>model_max_length</c> (or 77 when the folder gives none).</param>
    /// <exception cref="ConfigException">A file is missing or malformed, or a special token is not in the vocabulary.</exception>
    public static ClipTokenizer Load(string directory, int? maxLength = null)
    {
        string vocabPath = Path.Combine(directory, "vocab.json"), mergesPath = Path.Combine(directory, "merges.txt");
        foreach (string path in new[] { vocabPath, mergesPath })
            if (!File.Exists(path)) throw new ConfigException($"{directory}: no {Path.GetFileName(path)} (a CLIP tokenizer folder holds vocab.json and merges.txt)");
        Dictionary<string, int> vocabulary;
        try { vocabulary = JsonSerializer.Deserialize<Dictionary<string, int>>(File.ReadAllText(vocabPath)) ?? throw new JsonException("null"); }
        catch (JsonException e) { throw new ConfigException($"{vocabPath}: not a token → id map ({e.Message})", e); }
        var merges = new List<string>();
        foreach (string line in File.ReadLines(mergesPath))
        {
            if (line.StartsWith("#version", StringComparison.Ordinal) || line.Length == 0) continue;
            if (line.Split(' ').Length != 2) throw new ConfigException($"{mergesPath}: line '{line}' is not a pair of symbols");
            merges.Add(line);
        }

        var config = ReadConfig(Path.Combine(directory, "tokenizer_config.json"));
        var special = ReadConfig(Path.Combine(directory, "special_tokens_map.json"));
        string Token(string key, string fallback) => TokenText(special, key) ?? TokenText(config, key) ?? fallback;
        int Id(string token, string role) => vocabulary.TryGetValue(token, out int id) ? id
            : throw new ConfigException($"{directory}: the {role} token '{token}' is not in vocab.json");
        int startId = Id(Token("bos_token", "<|startoftext|>"), "start");
        int endId = Id(Token("eos_token", "<|endoftext|>"), "end");
        int padId = Id(Token("pad_token", "<|endoftext|>"), "pad");
        int length = maxLength ?? (config is { } c && c.TryGetProperty("model_max_length", out var m) && m.TryGetDouble(out double declared)
                                   && declared is >= 3 and <= 1 << 20 ? (int)declared : DefaultMaxLength);
        if (length < 3) throw ConfigException.For("maxLength", $"{length}: a CLIP encoding holds at least the start token, one token and the end token");

        var specialTokens = new Dictionary<string, int>
        {
            [Token("bos_token", "<|startoftext|>")] = startId,
            [Token("eos_token", "<|endoftext|>")] = endId,
        };
        var options = new BpeOptions(vocabulary)
        {
            Merges = merges,
            PreTokenizer = new RegexPreTokenizer(ClipPattern(), specialTokens),
            SpecialTokens = specialTokens,
            EndOfWordSuffix = "</w>",
            ByteLevel = true,
        };
        BpeTokenizer bpe;
        try { bpe = BpeTokenizer.Create(options); }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or FormatException)
        {
            throw new ConfigException($"{directory}: not a usable BPE vocabulary ({e.Message})", e);
        }
        return new ClipTokenizer(bpe, length, startId, endId, padId, directory);
    }

    /// <summary>The ids of <paramref name="text"/>'s tokens, without start, end or padding and without truncation.</summary>
    public IReadOnlyList<int> ContentIds(string text) =>
        Clean(text) is { Length: > 0 } clean ? _bpe.EncodeToIds(clean, considerPreTokenization: true, considerNormalization: false) : [];

    /// <summary>
    /// The <see cref="MaxLength"/> ids the text encoder is fed: start, the content (truncated to MaxLength − 2 tokens, as
    /// CLIP truncates), end, then padding.
    /// </summary>
    public int[] Encode(string text) => Encode(text, out _);

    /// <summary>As <see cref="Encode(string)"/>; <paramref name="truncated"/> says how many content tokens did not fit.</summary>
    public int[] Encode(string text, out int truncated) => Encode(text, out _, out truncated);

    /// <summary>As <see cref="Encode(string)"/>; <paramref name="kept"/> content tokens were fed, <paramref name="truncated"/> did not fit.</summary>
    public int[] Encode(string text, out int kept, out int truncated)
    {
        var content = ContentIds(text);
        kept = Math.Min(content.Count, MaxLength - 2);
        truncated = content.Count - kept;
        var ids = new int[MaxLength];
        ids[0] = StartId;
        for (int i = 0; i < kept; i++) ids[1 + i] = content[i];
        ids[1 + kept] = EndId;
        for (int i = kept + 2; i < MaxLength; i++) ids[i] = PadId;
        return ids;
    }

    /// <summary>CLIP's cleaning: HTML entities unescaped (twice, as CLIP does), NFC, whitespace collapsed and trimmed, lower case.</summary>
    internal static string Clean(string text)
    {
        string unescaped = WebUtility.HtmlDecode(WebUtility.HtmlDecode(text)).Normalize(NormalizationForm.FormC);
        return Whitespace().Replace(unescaped, " ").Trim().ToLower(CultureInfo.InvariantCulture);
    }

    // CLIP's split (simple_tokenizer.py): its special tokens, English contractions, runs of letters, single digits,
    // runs of anything else that is not whitespace.
    [GeneratedRegex(@"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+", RegexOptions.IgnoreCase | RegexOptions.CultureInvariant)]
    private static partial Regex ClipPattern();

    [GeneratedRegex(@"\s+")]
    private static partial Regex Whitespace();

    private static JsonElement? ReadConfig(string path)
    {
        if (!File.Exists(path)) return null;
        try { return JsonDocument.Parse(File.ReadAllText(path)).RootElement; }
        catch (JsonException e) { throw new ConfigException($"{path}: not JSON ({e.Message})", e); }
    }

    // A token is a string or {"content": "..."} (AddedToken) in Hugging Face's files.
    private static string? TokenText(JsonElement? config, string key) =>
        config is { ValueKind: JsonValueKind.Object } c && c.TryGetProperty(key, out var v)
            ? v.ValueKind == JsonValueKind.String ? v.GetString()
            : v.ValueKind == JsonValueKind.Object && v.TryGetProperty("content", out var content) ? content.GetString() : null
            : null;
}
