using System.Globalization;
using System.Text.Json;
using OnnxAlign.Core;

namespace OnnxAlign.Rewards;

/// <summary>How an image model's input is normalised: x_in = (u·Scale − Mean_c) / Std_c for u ∈ [0, 1] the image (DESIGN §8).</summary>
/// <param name="Mean">Per-channel mean (one value for every channel, or one per channel).</param>
/// <param name="Std">Per-channel standard deviation, &gt; 0.</param>
/// <param name="Scale">What u = 1 becomes before the mean is taken off: 1 for a [0, 1] input, 255 for 0..255 (Hugging Face's
/// <c>do_rescale: false</c>).</param>
public sealed record InputNormalization(double[] Mean, double[] Std, double Scale = 1)
{
    /// <summary>The normalisation that maps u ∈ [0, 1] linearly onto [low, high].</summary>
    public static InputNormalization Range(double low, double high) => new([-low / (high - low)], [1 / (high - low)]);
}

/// <summary>
/// A reward model's card, <c>reward.json</c> (DESIGN §8): how to feed an ONNX image model a sample and which number of
/// its output is the reward. Every field is optional where the model leaves no doubt:
/// <code>
/// {
///   "model": "model.onnx",            // the ONNX file beside the card (default model.onnx)
///   "input": "x",                     // the input's name (default: the only input)
///   "output": "logits",               // the output's name (default: the only output)
///   "index": "Trouser",               // which value of the output: a number or a name from classes.json (default: none; needed when the output has several)
///   "transform": "log_softmax",       // log_softmax (log-probability of the index) or raw (default)
///   "range": [-1, 1],                 // the input range the model expects, images mapped linearly onto it …
///   "normalize": { "mean": [0.5], "std": [0.5] },   // … or a mean/std normalisation of [0, 1] images (as preprocessor_config.json)
///   "size": [32, 32],                 // H, W the model expects (default: the model's fixed input size, else the sample's); samples are resized (bilinear)
///   "features": "features"            // evaluators only: the penultimate output for the Fréchet distance
/// }
/// </code>
/// Without <c>range</c> and <c>normalize</c>, Hugging Face's <c>preprocessor_config.json</c> beside the model is read
/// (<c>do_rescale</c>, <c>rescale_factor</c>, <c>do_normalize</c>, <c>image_mean</c>, <c>image_std</c>, <c>size</c>);
/// one of the three must say how inputs are scaled.
/// </summary>
public sealed record RewardCard
{
    /// <summary>The card's file name in a reward folder.</summary>
    public const string FileName = "reward.json";

    /// <summary>The card's path (or the model's, when the card is implicit), for messages.</summary>
    public required string Source { get; init; }

    /// <summary>The ONNX model's path.</summary>
    public required string ModelPath { get; init; }

    /// <summary>The input's name, or null for the only input.</summary>
    public string? Input { get; init; }

    /// <summary>The reward's output, or null for the only output.</summary>
    public string? Output { get; init; }

    /// <summary>A number or a class name; null when the output has one value per sample.</summary>
    public string? Index { get; init; }

    /// <summary><c>raw</c> or <c>log_softmax</c>.</summary>
    public string Transform { get; init; } = "raw";

    /// <summary>How [0, 1] images are scaled into the model's input.</summary>
    public required InputNormalization Normalization { get; init; }

    /// <summary>[H, W] the model expects, or null (the model's fixed size, else the sample's).</summary>
    public int[]? Size { get; init; }

    /// <summary>An evaluator's feature output, or null.</summary>
    public string? Features { get; init; }

    /// <summary>Class names from <c>classes.json</c> beside the model (empty when absent).</summary>
    public string[] ClassNames { get; init; } = [];

    /// <summary>The transforms a card may name.</summary>
    public static readonly string[] Transforms = ["raw", "log_softmax"];

    /// <summary>
    /// Reads the card of <paramref name="path"/>: a folder with <c>reward.json</c> (and the model), or a <c>.onnx</c> file
    /// with <c>NAME.reward.json</c> or <c>reward.json</c> beside it.
    /// </summary>
    /// <param name="path">The folder or the .onnx file.</param>
    /// <param name="parameter">The parameter errors name (e.g. <c>reward</c>, <c>evaluator</c>).</param>
    /// <exception cref="ConfigException">No card, a malformed card, or no way to scale the inputs; one line naming the file.</exception>
    public static RewardCard Read(string path, string parameter = "reward")
    {
        ConfigException Bad(string file, string why) => ConfigException.For(parameter, $"{file}: {why}");
        string folder, cardPath;
        string? modelPath = null;
        if (Directory.Exists(path))
        {
            folder = path;
            cardPath = System.IO.Path.Combine(path, FileName);
        }
        else if (File.Exists(path) && path.EndsWith(".onnx", StringComparison.OrdinalIgnoreCase))
        {
            folder = System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(path))!;
            modelPath = path;
            string sidecar = System.IO.Path.ChangeExtension(path, ".reward.json");
            cardPath = File.Exists(sidecar) ? sidecar : System.IO.Path.Combine(folder, FileName);
        }
        else throw Bad(path, "no such folder or .onnx file");
        if (!File.Exists(cardPath))
            throw Bad(cardPath, "no reward card; write one saying the input range or normalisation, the output and its index (README, 'Rewards that are networks')");

        JsonElement root;
        try
        {
            using var document = JsonDocument.Parse(File.ReadAllText(cardPath), new JsonDocumentOptions { CommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true });
            root = document.RootElement.Clone();
        }
        catch (JsonException e) { throw Bad(cardPath, $"not valid JSON ({e.Message})"); }
        if (root.ValueKind != JsonValueKind.Object) throw Bad(cardPath, "expected a JSON object");
        var known = new HashSet<string> { "model", "input", "output", "index", "transform", "range", "normalize", "size", "features", "description" };
        if (root.EnumerateObject().Select(p => p.Name).FirstOrDefault(name => !known.Contains(name)) is { } unknown)
            throw Bad(cardPath, $"unknown field '{unknown}' (expected {string.Join(", ", known)})");

        string? Text(string name) => root.TryGetProperty(name, out var v)
            ? v.ValueKind == JsonValueKind.String && v.GetString() is { Length: > 0 } s ? s : throw Bad(cardPath, $"'{name}' must be a non-empty string")
            : null;
        if (Text("model") is { } model)
        {
            if (modelPath is not null && !string.Equals(System.IO.Path.GetFileName(modelPath), model, StringComparison.Ordinal))
                throw Bad(cardPath, $"describes the model '{model}', not {System.IO.Path.GetFileName(modelPath)}");
            modelPath ??= System.IO.Path.Combine(folder, model);
        }
        modelPath ??= System.IO.Path.Combine(folder, "model.onnx");
        if (!File.Exists(modelPath)) throw Bad(modelPath, "no such file (the reward card's model)");

        string? index = null;
        if (root.TryGetProperty("index", out var indexElement))
            index = indexElement.ValueKind switch
            {
                JsonValueKind.Number when indexElement.TryGetInt32(out int i) && i >= 0 => i.ToString(CultureInfo.InvariantCulture),
                JsonValueKind.String when indexElement.GetString() is { Length: > 0 } s => s,
                _ => throw Bad(cardPath, "'index' must be a class number ≥ 0 or a class name"),
            };
        string transform = Text("transform") ?? "raw";
        if (!Transforms.Contains(transform)) throw Bad(cardPath, $"'transform' is '{transform}', expected {string.Join(" or ", Transforms)}");

        int[]? size = null;
        if (root.TryGetProperty("size", out var sizeElement))
        {
            size = sizeElement.ValueKind == JsonValueKind.Array && sizeElement.GetArrayLength() == 2
                   && sizeElement.EnumerateArray().All(e => e.TryGetInt32(out int v) && v >= 1 && v <= 8192)
                ? sizeElement.EnumerateArray().Select(e => e.GetInt32()).ToArray()
                : throw Bad(cardPath, "'size' must be [H, W] with positive integers");
        }

        InputNormalization? normalization = null;
        bool hasRange = root.TryGetProperty("range", out var rangeElement), hasNormalize = root.TryGetProperty("normalize", out var normalizeElement);
        if (hasRange && hasNormalize) throw Bad(cardPath, "give 'range' or 'normalize', not both");
        if (hasRange)
        {
            var bounds = Numbers(rangeElement);
            if (bounds is not { Length: 2 } || !(bounds[0] < bounds[1])) throw Bad(cardPath, "'range' must be [low, high] with low < high");
            normalization = InputNormalization.Range(bounds[0], bounds[1]);
        }
        else if (hasNormalize)
        {
            if (normalizeElement.ValueKind != JsonValueKind.Object || !normalizeElement.TryGetProperty("mean", out var m) || !normalizeElement.TryGetProperty("std", out var s))
                throw Bad(cardPath, "'normalize' must be {\"mean\": [...], \"std\": [...]} for images in [0, 1]");
            normalization = MeanStd(Numbers(m), Numbers(s), 1, () => Bad(cardPath, "'normalize': mean and std must be equally long lists of numbers, std > 0"));
        }
        string preprocessor = System.IO.Path.Combine(System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(modelPath))!, "preprocessor_config.json");
        if (File.Exists(preprocessor))
        {
            var (fromHub, hubSize) = ReadPreprocessor(preprocessor, Bad);
            normalization ??= fromHub;
            size ??= hubSize;
        }
        if (normalization is null)
            throw Bad(cardPath, "says neither the input 'range' ([low, high]) nor a 'normalize' {mean, std}, and there is no preprocessor_config.json beside the model");

        return new RewardCard
        {
            Source = cardPath, ModelPath = modelPath, Input = Text("input"), Output = Text("output"), Index = index, Transform = transform,
            Normalization = normalization, Size = size, Features = Text("features"),
            ClassNames = RewardSpec.ClassNames(System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(modelPath))!, folder),
        };
    }

    /// <summary>The index of class <paramref name="which"/> (a number or a name from classes.json) among <paramref name="count"/> outputs.</summary>
    /// <exception cref="ConfigException">An unknown class or a number out of range (parameter <c>reward</c>).</exception>
    public int ResolveIndex(string which, int count, string parameter = "reward")
    {
        int k = int.TryParse(which, NumberStyles.None, CultureInfo.InvariantCulture, out int number) ? number
            : Array.FindIndex(ClassNames, n => string.Equals(n, which, StringComparison.OrdinalIgnoreCase));
        if (k < 0 || k >= count)
            throw ConfigException.For(parameter, $"{Source}: unknown class '{which}' (expected 0..{count - 1}{(ClassNames.Length > 0 ? " or one of " + string.Join(", ", ClassNames) : "; classes.json beside the model gives names")})");
        return k;
    }

    private static double[]? Numbers(JsonElement element) =>
        element.ValueKind == JsonValueKind.Array && element.EnumerateArray().All(e => e.ValueKind == JsonValueKind.Number && double.IsFinite(e.GetDouble()))
            ? element.EnumerateArray().Select(e => e.GetDouble()).ToArray()
            : element.ValueKind == JsonValueKind.Number && double.IsFinite(element.GetDouble()) ? [element.GetDouble()] : null;

    private static InputNormalization MeanStd(double[]? mean, double[]? std, double scale, Func<ConfigException> bad) =>
        mean is { Length: > 0 } && std is not null && std.Length == mean.Length && std.All(v => v > 0) ? new InputNormalization(mean, std, scale) : throw bad();

    /// <summary>Hugging Face's image-processor config: rescale, normalise and size, as its pipelines apply them.</summary>
    private static (InputNormalization? Normalization, int[]? Size) ReadPreprocessor(string path, Func<string, string, ConfigException> bad)
    {
        JsonElement root;
        try
        {
            using var document = JsonDocument.Parse(File.ReadAllText(path));
            root = document.RootElement.Clone();
        }
        catch (JsonException e) { throw bad(path, $"not valid JSON ({e.Message})"); }
        if (root.ValueKind != JsonValueKind.Object) throw bad(path, "expected a JSON object");
        bool Flag(string name, bool fallback) => root.TryGetProperty(name, out var v) ? v.ValueKind switch
        {
            JsonValueKind.True => true, JsonValueKind.False => false, _ => throw bad(path, $"'{name}' must be true or false"),
        } : fallback;
        // Pixels arrive as 0..255; do_rescale multiplies by rescale_factor (1/255 by default).
        double factor = root.TryGetProperty("rescale_factor", out var f) && f.ValueKind == JsonValueKind.Number ? f.GetDouble() : 1 / 255.0;
        double scale = Flag("do_rescale", true) ? 255 * factor : 255;
        InputNormalization normalization = Flag("do_normalize", root.TryGetProperty("image_mean", out _))
            ? MeanStd(root.TryGetProperty("image_mean", out var m) ? Numbers(m) : null, root.TryGetProperty("image_std", out var s) ? Numbers(s) : null, scale,
                            () => bad(path, "'image_mean' and 'image_std' must be equally long lists of numbers, std > 0"))
            : new InputNormalization([0], [1], scale);
        int[]? size = null;
        foreach (var name in new[] { "crop_size", "size" })
        {
            if (size is not null || !root.TryGetProperty(name, out var v) || (name == "crop_size" && !Flag("do_center_crop", true))) continue;
            size = v.ValueKind switch
            {
                JsonValueKind.Number when v.TryGetInt32(out int side) && side > 0 => [side, side],
                JsonValueKind.Object when v.TryGetProperty("height", out var h) && v.TryGetProperty("width", out var w) && h.TryGetInt32(out int hh) && w.TryGetInt32(out int ww) && hh > 0 && ww > 0 => [hh, ww],
                JsonValueKind.Object when v.TryGetProperty("shortest_edge", out var e) && e.TryGetInt32(out int edge) && edge > 0 => [edge, edge],
                _ => null,
            };
        }
        return (normalization, size);
    }
}
