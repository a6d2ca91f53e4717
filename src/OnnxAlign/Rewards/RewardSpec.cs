using System.Globalization;
using System.Text.Json;
using OnnxAlign.Core;
using OnnxAlign.IO;

namespace OnnxAlign.Rewards;

/// <summary>
/// Parses reward specs of the command line into rewards for samples of a given shape.
/// Linear (<see cref="LinearReward"/>):
/// <list type="bullet">
/// <item><c>brightness</c>: the mean of all values;</item>
/// <item><c>channel-mean:C</c>: the mean of channel C (0-based) of a [C, H, W] sample;</item>
/// <item><c>region-brightness:MASK.png</c>: the mask-weighted mean (mask in [0, 1], all channels);</item>
/// <item><c>direction:FILE.npy</c> or <c>direction:FILE.png</c>: ⟨a, x⟩ with a read from the file;</item>
/// <item><c>class:K</c> or <c>class:NAME</c>, optionally <c>class:K@DIR</c>: the logit ⟨W_K, x⟩ + b_K of a linear
/// classifier with <c>W.npy</c> (rows = classes), <c>b.npy</c> and optional <c>classes.json</c> (names) in DIR,
/// by default the model folder's <c>classifier/</c>.</item>
/// </list>
/// Low-rank (<see cref="FeatureReward"/>, r = f(Ax + c)):
/// <list type="bullet">
/// <item><c>color-target:V1,..,VC</c>: −‖mean colour − target‖², target per channel in [0, 1] (k = C, concave);</item>
/// <item><c>log-prob:K|NAME[@DIR]</c>: log-softmax of the linear classifier's logits (k = classes, concave);</item>
/// <item><c>ramp:LINEAR,LO,HI</c>: clip((r_lin − lo)/(hi − lo), 0, 1) of any linear spec (k = 1, Lipschitz, not concave);</item>
/// <item><c>lowrank:A.npy:FUNCTION</c>: features A [k, ...] and a library function (<see cref="FeatureFunction.Forms"/>).</item>
/// <item><c>any-class:NAME|NAME..[@DIR][,T]</c>: T·log Σ_c exp(logit_c/T) over a class set (convex; T = 1 by default;
/// with T = λ the KL-aligned law is exactly the mixture of the class tilts, DESIGN §2).</item>
/// <item><c>FUNCTION(LINEAR|LINEAR..)</c>: a library function of linear specs as features, e.g. <c>max(class:Bag|class:Trouser)</c>,
/// <c>variance(region-brightness:top.png|region-brightness:bottom.png)</c>, <c>sq-dist:0.5,-0.5(channel-mean:0|channel-mean:1)</c>.</item>
/// </list>
/// A network (<see cref="OnnxReward"/>, no structure, DESIGN §8): <c>onnx:PATH[@CLASS]</c>, PATH a folder with
/// <c>reward.json</c> and the model, or a <c>.onnx</c> file with its card beside it.
/// </summary>
public static class RewardSpec
{
    /// <summary>The linear spec forms, for help texts and errors.</summary>
    public const string LinearForms = "brightness, channel-mean:C, region-brightness:MASK.png, direction:FILE.npy|FILE.png, class:K|NAME[@DIR]";

    /// <summary>All spec forms, for help texts and errors.</summary>
    public const string Forms = LinearForms + ", color-target:V1,..,VC, log-prob:K|NAME[@DIR], ramp:LINEAR,LO,HI, lowrank:A.npy:FUNCTION, " +
                                "any-class:NAME|NAME[@DIR][,T], FUNCTION(LINEAR|LINEAR..), onnx:PATH[@CLASS]";

    /// <summary>Builds the reward a spec names: linear, low-rank or a network.</summary>
    /// <param name="spec">The spec (<see cref="Forms"/>).</param>
    /// <param name="sampleShape">The shape of one sample.</param>
    /// <param name="modelDirectory">The model folder (its classifier/ serves class rewards), or null.</param>
    /// <param name="network">How an <c>onnx:</c> reward is fed and run: the samples' data range and the session options (null: [−1, 1] and the defaults).</param>
    /// <exception cref="ConfigException">Malformed spec, unreadable file or a shape that does not fit the samples.</exception>
    /// <remarks>The caller owns the reward: dispose it (a network reward holds a session).</remarks>
    public static Reward Parse(string spec, IReadOnlyList<int> sampleShape, string? modelDirectory, NetworkRewardOptions? network = null)
    {
        var (kind, argument) = Split(spec);
        ConfigException Bad(string why) => ConfigException.For("reward", $"'{spec}': {why}");
        int size = sampleShape.Aggregate(1, (a, b) => a * b);
        if (spec.EndsWith(')') && spec.IndexOf('(') is var open && open > 0)
        {
            // FUNCTION(LINEAR|LINEAR..): each linear spec is one feature row (with its offset).
            var parts = spec[(open + 1)..^1].Split('|').Select(p => ParseLinear(p, sampleShape, modelDirectory)).ToArray();
            var rows = parts.SelectMany(p => p.Direction.ToArray()).ToArray();
            var f = FeatureFunction.Parse(spec[..open], parts.Length);
            return new FeatureReward(spec, rows, parts.Length, f, parts.Select(p => (float)p.Offset).ToArray());
        }
        switch (kind)
        {
            case "onnx":
            {
                if (argument.Length == 0) throw Bad("expected onnx:PATH[@CLASS], PATH a folder with reward.json or a .onnx file");
                var (path, which) = SplitNetwork(argument);
                if (which is { Length: 0 }) throw Bad("expected a class after '@' (a number or a name from classes.json)");
                // A latent model's reward networks see the decoded images (DESIGN §8–§9), in the decoder's [−1, 1].
                if (network?.Decoder is { } decoder)
                    return new DecodedReward(new OnnxReward(spec, path, which, decoder.ImageShape, null, network.Options), decoder);
                return new OnnxReward(spec, path, which, sampleShape, network?.Range, network?.Options);
            }

            case "any-class":
            {
                double temperature = 1;
                (argument, string? given) = SplitTemperature(argument);
                if (given is not null && (!double.TryParse(given, NumberStyles.Float, CultureInfo.InvariantCulture, out temperature) || !(temperature > 0) || double.IsInfinity(temperature)))
                    throw Bad($"'{given}': expected a temperature T > 0 after the comma");
                int at = argument.IndexOf('@');
                string suffix = at < 0 ? "" : argument[at..];
                var names = (at < 0 ? argument : argument[..at]).Split('|');
                if (names.Length < 2) throw Bad("expected at least two classes, e.g. any-class:Trouser|Bag");
                var picked = names.Select(n => Classifier(spec, n + suffix, size, modelDirectory)).ToArray();
                var rows = picked.SelectMany(c => c.W.Data.AsSpan(c.Class * size, size).ToArray()).ToArray();
                return new FeatureReward(spec, rows, names.Length, new FeatureFunction.LogSumExp(temperature), picked.Select(c => c.B.Data[c.Class]).ToArray());
            }

            case "color-target":
            {
                if (!ImageFiles.IsImage(sampleShape)) throw Bad("needs image samples [C, H, W]");
                int channels = sampleShape[0];
                var values = argument.Split(',');
                var target = new double[values.Length];
                for (int j = 0; j < values.Length; j++)
                    if (!double.TryParse(values[j], NumberStyles.Float, CultureInfo.InvariantCulture, out double v) || !(v >= 0 && v <= 1))
                        throw Bad($"'{values[j]}': expected {channels} colour values in [0, 1]");
                    else target[j] = 2 * v - 1; // pixel values live in [−1, 1]
                if (target.Length != channels) throw Bad($"expected {channels} colour values in [0, 1], one per channel");
                int plane = size / channels;
                var a = new float[channels * size];
                for (int c = 0; c < channels; c++) a.AsSpan(c * size + c * plane, plane).Fill(1f / plane);
                return new FeatureReward(spec, a, channels, FeatureFunction.Quadratic.NegativeSquaredDistance(target));
            }

            case "log-prob":
            {
                var (w, b, k) = Classifier(spec, argument, size, modelDirectory);
                return new FeatureReward(spec, w.Data, w.Shape[0], new FeatureFunction.LogSoftmax(w.Shape[0], k), b.Data);
            }

            case "ramp":
            {
                if (SplitRamp(argument) is not var (linear, bounds)) throw Bad("expected ramp:LINEAR-SPEC,LO,HI");
                var inner = ParseLinear(linear, sampleShape, modelDirectory);
                var ramp = FeatureFunction.Parse($"ramp:{bounds}", 1);
                return new FeatureReward(spec, inner.Direction, 1, ramp, [(float)inner.Offset]);
            }

            case "lowrank":
            {
                int colon = argument.IndexOf(':');
                if (colon <= 0) throw Bad($"expected lowrank:A.npy:FUNCTION with FUNCTION one of {FeatureFunction.Forms}");
                var features = NpyFile.Read(argument[..colon]);
                if (features.Shape.Length < 2 || features.Data.Length != features.Shape[0] * size)
                    throw Bad($"{argument[..colon]} has shape [{string.Join(", ", features.Shape)}], expected [k, {string.Join(", ", sampleShape)}]");
                var f = FeatureFunction.Parse(argument[(colon + 1)..], features.Shape[0]);
                return new FeatureReward(spec, features.Data, features.Shape[0], f);
            }

            default:
                return ParseLinear(spec, sampleShape, modelDirectory);
        }
    }

    /// <summary>Builds a linear reward (the KL tilt's and the closed-form prox's input).</summary>
    /// <exception cref="ConfigException">Malformed or non-linear spec, unreadable file or a shape that does not fit.</exception>
    public static LinearReward ParseLinear(string spec, IReadOnlyList<int> sampleShape, string? modelDirectory)
    {
        int size = sampleShape.Aggregate(1, (a, b) => a * b);
        var (kind, argument) = Split(spec);
        ConfigException Bad(string why) => ConfigException.For("reward", $"'{spec}': {why}");
        if (spec.EndsWith(')')) throw Bad($"is not a linear reward (linear: {LinearForms})");

        switch (kind)
        {
            case "brightness" when argument.Length == 0:
                return new LinearReward(spec, Enumerable.Repeat(1f / size, size).ToArray());

            case "channel-mean":
            {
                if (sampleShape.Count != 3) throw Bad("needs image samples [C, H, W]");
                if (!int.TryParse(argument, NumberStyles.None, CultureInfo.InvariantCulture, out int channel) || channel >= sampleShape[0])
                    throw Bad($"expected a channel index 0..{sampleShape[0] - 1}");
                int plane = sampleShape[1] * sampleShape[2];
                var a = new float[size];
                a.AsSpan(channel * plane, plane).Fill(1f / plane);
                return new LinearReward(spec, a);
            }

            case "region-brightness" or "direction" when argument.Length == 0:
                throw Bad($"expected a file after '{kind}:'");

            case "region-brightness":
            {
                if (!ImageFiles.IsImage(sampleShape)) throw Bad("needs image samples [C, H, W]");
                var mask = ImageFiles.ReadImage(argument, [1, sampleShape[1], sampleShape[2]]).Select(v => (v + 1) / 2).ToArray();
                double total = mask.Sum() * sampleShape[0];
                if (total <= 0) throw Bad("the mask is empty (all black)");
                var a = new float[size];
                for (int c = 0; c < sampleShape[0]; c++)
                    for (int i = 0; i < mask.Length; i++) a[c * mask.Length + i] = (float)(mask[i] / total);
                return new LinearReward(spec, a);
            }

            case "direction":
            {
                float[] a = argument.EndsWith(".png", StringComparison.OrdinalIgnoreCase)
                    ? ImageFiles.IsImage(sampleShape) ? ImageFiles.ReadImage(argument, sampleShape) : throw Bad("a PNG direction needs image samples")
                    : NpyFile.Read(argument) is var array && array.Data.Length == size ? array.Data
                    : throw Bad($"{argument} has shape [{string.Join(", ", array.Shape)}], expected {size} values [{string.Join(", ", sampleShape)}]");
                return new LinearReward(spec, a);
            }

            case "class":
            {
                var (w, b, k) = Classifier(spec, argument, size, modelDirectory);
                return new LinearReward(spec, w.Data.AsSpan(k * size, size), b.Data[k]);
            }

            case "color-target" or "log-prob" or "ramp" or "lowrank" or "any-class" or "onnx":
                throw Bad($"is not a linear reward (linear: {LinearForms})");

            default:
                throw Bad($"unknown reward (expected one of: {Forms})");
        }
    }

    /// <summary>
    /// The files a spec reads, in a fixed order (a plan records their SHA-256, so that a shard refuses a reward whose
    /// files changed, DESIGN §10): masks, directions, feature matrices, a classifier folder's <c>W.npy</c>, <c>b.npy</c>
    /// and <c>classes.json</c>, a reward network's folder (or its <c>.onnx</c> and the files beside it). Files that do
    /// not exist are left out (parsing the spec names them).
    /// </summary>
    public static IReadOnlyList<string> Files(string spec, string? modelDirectory)
    {
        var files = new List<string>();
        void Add(string path) { if (File.Exists(path) && !files.Contains(Path.GetFullPath(path))) files.Add(Path.GetFullPath(path)); }
        void AddClassifier(string argument)
        {
            if (ClassifierDirectory(argument, modelDirectory) is not { } directory) return;
            foreach (string name in new[] { "W.npy", "b.npy", "classes.json" }) Add(Path.Combine(directory, name));
            if (modelDirectory is not null) Add(Path.Combine(modelDirectory, "classes.json"));
        }
        if (spec.EndsWith(')') && spec.IndexOf('(') is var open && open > 0)
        {
            foreach (string part in spec[(open + 1)..^1].Split('|'))
                foreach (string file in Files(part, modelDirectory)) Add(file);
            return files;
        }
        var (kind, argument) = Split(spec);
        switch (kind)
        {
            case "region-brightness" or "direction": Add(argument); break;
            case "class" or "log-prob": AddClassifier(argument); break;
            case "any-class": AddClassifier(SplitTemperature(argument).Classes); break;
            case "ramp":
                if (SplitRamp(argument) is var (linear, _)) foreach (string file in Files(linear, modelDirectory)) Add(file);
                break;
            case "lowrank":
            {
                int colon = argument.IndexOf(':');
                if (colon > 0) Add(argument[..colon]);
                break;
            }
            case "onnx":
            {
                string path = SplitNetwork(argument).Path;
                string? folder = Directory.Exists(path) ? path : File.Exists(path) ? Path.GetDirectoryName(Path.GetFullPath(path)) : null;
                if (File.Exists(path)) Add(path);
                // The model, its external weights and the card's files (reward.json, classes.json, preprocessor_config.json).
                if (folder is not null)
                    foreach (string file in Directory.GetFiles(folder).Where(f => Path.GetExtension(f) is ".onnx" or ".onnx_data" or ".data" or ".json").Order(StringComparer.Ordinal))
                        Add(file);
                break;
            }
        }
        return files;
    }

    /// <summary><c>PATH[@CLASS]</c> of an <c>onnx:</c> spec: the class is null when none is given ('@' inside an existing path is part of it).</summary>
    private static (string Path, string? Class) SplitNetwork(string argument)
    {
        int at = argument.LastIndexOf('@');
        return at > 0 && !File.Exists(argument) && !Directory.Exists(argument) ? (argument[..at], argument[(at + 1)..]) : (argument, null);
    }

    /// <summary><c>LINEAR,LO,HI</c> of a <c>ramp:</c> spec as the linear spec and <c>LO,HI</c>; null when there are not two commas.</summary>
    private static (string Linear, string Bounds)? SplitRamp(string argument)
    {
        int second = argument.LastIndexOf(','), first = second <= 0 ? -1 : argument.LastIndexOf(',', second - 1);
        return first > 0 ? (argument[..first], argument[(first + 1)..]) : null;
    }

    /// <summary><c>CLASSES[@DIR][,T]</c> of an <c>any-class:</c> spec as the part before the temperature and the temperature's text (null: none).</summary>
    private static (string Classes, string? Temperature) SplitTemperature(string argument)
    {
        int comma = argument.LastIndexOf(',');
        return comma > 0 ? (argument[..comma], argument[(comma + 1)..]) : (argument, null);
    }

    /// <summary>The classifier folder of <c>K|NAME[@DIR]</c>: DIR, else the model folder's <c>classifier/</c>, else null.</summary>
    private static string? ClassifierDirectory(string argument, string? modelDirectory)
    {
        int at = argument.IndexOf('@');
        return at >= 0 ? argument[(at + 1)..] : modelDirectory is null ? null : Path.Combine(modelDirectory, "classifier");
    }

    private static (string Kind, string Argument) Split(string spec)
    {
        int colon = spec.IndexOf(':');
        return colon < 0 ? (spec, "") : (spec[..colon], spec[(colon + 1)..]);
    }

    /// <summary>A linear classifier's W, b and the index of the class named by <c>K|NAME[@DIR]</c>.</summary>
    private static (NpyArray W, NpyArray B, int Class) Classifier(string spec, string argument, int size, string? modelDirectory)
    {
        ConfigException Bad(string why) => ConfigException.For("reward", $"'{spec}': {why}");
        int at = argument.IndexOf('@');
        string which = at < 0 ? argument : argument[..at];
        string directory = ClassifierDirectory(argument, modelDirectory) ?? throw Bad("no classifier folder (give class:K@DIR)");
        var w = NpyFile.Read(Path.Combine(directory, "W.npy"));
        var b = NpyFile.Read(Path.Combine(directory, "b.npy"));
        if (w.Shape.Length != 2 || w.Shape[1] != size)
            throw Bad($"W.npy has shape [{string.Join(", ", w.Shape)}], expected [classes, {size}]");
        if (w.Shape[0] < 1) throw Bad($"W.npy in {directory} holds no class (shape [{string.Join(", ", w.Shape)}])");
        if (b.Data.Length != w.Shape[0])
            throw Bad($"b.npy has {b.Data.Length} values, expected {w.Shape[0]}");
        if (w.Data.Any(v => !float.IsFinite(v)) || b.Data.Any(v => !float.IsFinite(v))) throw Bad($"the classifier in {directory} holds NaN or ±∞ weights");
        string[] names = ClassNames(directory, modelDirectory);
        // A name must pick one class: classes.json names every class once (or is absent).
        if (names.Length > 0 && names.Length != w.Shape[0]) throw Bad($"classes.json names {names.Length} classes, W.npy has {w.Shape[0]}");
        if (names.GroupBy(n => n, StringComparer.OrdinalIgnoreCase).FirstOrDefault(g => g.Count() > 1) is { } twice)
            throw Bad($"classes.json names '{twice.Key}' more than once");
        int k = int.TryParse(which, NumberStyles.None, CultureInfo.InvariantCulture, out int index) ? index
            : Array.FindIndex(names, n => string.Equals(n, which, StringComparison.OrdinalIgnoreCase));
        if (k < 0 || k >= w.Shape[0])
            throw Bad($"unknown class '{which}' (expected 0..{w.Shape[0] - 1}{(names.Length > 0 ? " or one of " + string.Join(", ", names) : "")})");
        return (w, b, k);
    }
    /// <summary>
    /// Every class logit of the linear classifier that a <c>class:K|NAME[@DIR]</c> spec reads, each a linear reward
    /// named <c>class:NAME[@DIR]</c> (a class that <c>classes.json</c> does not name: by its index), and the index of
    /// the spec's own class among them.
    /// </summary>
    /// <param name="spec">A <c>class:</c> spec.</param>
    /// <param name="sampleShape">The shape of one sample.</param>
    /// <param name="modelDirectory">The model folder (its classifier/ serves a spec without <c>@DIR</c>), or null.</param>
    /// <exception cref="ConfigException">Not a <c>class:</c> spec, or its classifier cannot be read or does not fit the samples (parameter <c>reward</c>).</exception>
    public static (IReadOnlyList<LinearReward> Logits, int Class) ClassLogits(string spec, IReadOnlyList<int> sampleShape, string? modelDirectory)
    {
        ArgumentNullException.ThrowIfNull(spec);
        ArgumentNullException.ThrowIfNull(sampleShape);
        var (kind, argument) = Split(spec);
        if (kind != "class") throw ConfigException.For("reward", $"'{spec}': is not a class reward (class:K|NAME[@DIR])");
        int size = sampleShape.Aggregate(1, (a, b) => a * b);
        var (w, b, k) = Classifier(spec, argument, size, modelDirectory);
        int at = argument.IndexOf('@');
        string suffix = at < 0 ? "" : argument[at..];
        string[] names = ClassNames(ClassifierDirectory(argument, modelDirectory)!, modelDirectory);
        var logits = Enumerable.Range(0, w.Shape[0])
            .Select(c => new LinearReward($"class:{(c < names.Length ? names[c] : c.ToString(CultureInfo.InvariantCulture))}{suffix}",
                                          w.Data.AsSpan(c * size, size), b.Data[c]))
            .ToArray();
        return (logits, k);
    }

    /// <summary>Class names from <c>classes.json</c> (a JSON array of strings) in the classifier or model folder.</summary>
    public static string[] ClassNames(string classifierDirectory, string? modelDirectory)
    {
        foreach (var dir in new[] { classifierDirectory, modelDirectory })
        {
            if (dir is null) continue;
            string path = Path.Combine(dir, "classes.json");
            if (!File.Exists(path)) continue;
            try { return JsonSerializer.Deserialize<string[]>(File.ReadAllText(path)) ?? []; }
            catch (JsonException e) { throw new ConfigException($"{path}: expected a JSON array of class names ({e.Message})"); }
        }
        return [];
    }
}

/// <summary>How an <c>onnx:</c> reward is fed and run.</summary>
/// <param name="Range">The samples' data range (null: [−1, 1], the PNGs' convention).</param>
/// <param name="Options">Device, threads and the session seam for the reward's network.</param>
/// <param name="Decoder">A latent model's VAE decoder: the reward network is then fed the decoded images (<see cref="DecodedReward"/>).</param>
public sealed record NetworkRewardOptions(Model.DataRange? Range, Model.DenoiserOptions? Options = null, Model.VaeDecoder? Decoder = null);
