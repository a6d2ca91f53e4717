using System.Reflection;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using OnnxAlign.Core;
using OnnxAlign.IO;
using OnnxAlign.Model;

namespace OnnxAlign.Jobs;

/// <summary>
/// A run plan written once and read by every shard (DESIGN §6, §10): the settings that determine the samples, the
/// identity of the model (a SHA-256 of its network files, so a copy on another node is recognised and a changed model
/// is not), the version that wrote it, and the results of every global set-up (<see cref="Setup"/>: values a shard
/// would otherwise compute itself, each differently). Sample i of a planned run depends only on the plan, the seed and
/// i, so shards never talk to each other and a merge reassembles exactly the single-machine run.
/// </summary>
public sealed record PlanFile
{
    /// <summary>The file format's name, written first in every plan.</summary>
    public const string FormatName = "onnxalign-plan/1";

    /// <summary>The version of OnnxAlign that wrote the plan; another version refuses it (its samples could differ).</summary>
    public required string Version { get; init; }

    /// <summary>The command whose run this is (<c>generate</c>).</summary>
    public required string Command { get; init; }

    /// <summary>The model's folder, as a full path.</summary>
    public required string Model { get; init; }

    /// <summary>SHA-256 (hex) of the model's network files (<see cref="NetworkHash"/>).</summary>
    public required string NetworkSha256 { get; init; }

    /// <summary>The settings by name, each in invariant text (null: not given and no default); those of <see cref="RunPlan.Settings"/>.</summary>
    public required IReadOnlyDictionary<string, string?> Settings { get; init; }

    /// <summary>The global set-up's results by name (e.g. <c>data_variance</c>, <c>log_partition</c>, <c>smc</c>: an exact method's number of systems and proposal); empty when the run needs none.</summary>
    public JsonObject Setup { get; init; } = new();

    /// <summary>The version of this library (its informational version, as report.json says it).</summary>
    public static string CurrentVersion =>
        typeof(PlanFile).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion
        ?? typeof(PlanFile).Assembly.GetName().Version?.ToString() ?? "unknown";

    /// <summary>The plan's identity: the first 16 hex digits of the SHA-256 of its canonical JSON. Shards of one plan carry the same id.</summary>
    public string Id => ShortHash(ToCanonicalJson());

    /// <summary>The plan of a run of <paramref name="model"/> with <paramref name="settings"/> and the set-up's results.</summary>
    public static PlanFile Create(string command, DiffusionModel model, IReadOnlyDictionary<string, string?> settings, JsonObject? setup = null) => new()
    {
        Version = CurrentVersion,
        Command = command,
        Model = Path.GetFullPath(model.Directory),
        NetworkSha256 = NetworkHash(model),
        Settings = settings,
        Setup = setup ?? new JsonObject(),
    };

    /// <summary>
    /// SHA-256 of the model's networks: each ONNX file (the UNet, and of a Stable-Diffusion-shaped model its text encoder
    /// and VAE decoder) with any external-data file beside it (<c>*.onnx_data</c>, <c>*.onnx.data</c>) in name order,
    /// then the tokenizer's and VAE's config files. Unlike a size and a time, it is the same for a copy on another node.
    /// </summary>
    public static string NetworkHash(DiffusionModel model)
    {
        var files = new List<string>();
        foreach (string network in model.Networks)
        {
            string folder = Path.GetDirectoryName(Path.GetFullPath(network))!;
            files.Add(network);
            files.AddRange(Directory.GetFiles(folder, "*.onnx_data").Concat(Directory.GetFiles(folder, "*.onnx.data")).Order(StringComparer.Ordinal));
        }
        if (model.TokenizerDirectory is { } tokenizer)
            files.AddRange(new[] { "vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json" }.Select(f => Path.Combine(tokenizer, f)).Where(File.Exists));
        if (model.Vae?.Source is { } vae && File.Exists(vae)) files.Add(vae);
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var buffer = new byte[1 << 20];
        foreach (string file in files)
        {
            using var stream = File.OpenRead(file);
            int read;
            while ((read = stream.Read(buffer, 0, buffer.Length)) > 0) hash.AppendData(buffer, 0, read);
        }
        return Convert.ToHexString(hash.GetHashAndReset()).ToLowerInvariant();
    }

    /// <summary>SHA-256 (hex) of a file: the identity of an input a plan's settings name (θ from <c>align</c>, initial noise).</summary>
    public static string FileHash(string path)
    {
        using var stream = File.OpenRead(path);
        return Convert.ToHexString(SHA256.HashData(stream)).ToLowerInvariant();
    }

    /// <summary>The settings that name input files whose contents decide the samples; a plan records their SHA-256 in <c>setup.inputs</c>.</summary>
    public static readonly IReadOnlyList<string> InputSettings = ["tilt", "init-noise", "encoder-hidden-states"];

    /// <summary>Records the SHA-256 of each input file the settings name (<see cref="InputSettings"/>) in <paramref name="setup"/>.</summary>
    /// <remarks>The files the <c>reward</c> setting's spec reads (<see cref="Rewards.RewardSpec.Files"/>) are recorded too, in order, under <c>reward_files</c>.</remarks>
    public static void RecordInputs(IReadOnlyDictionary<string, string?> settings, JsonObject setup, string? modelDirectory = null)
    {
        var inputs = new JsonObject();
        foreach (string name in InputSettings)
            if (settings.GetValueOrDefault(name) is { } path) inputs[name] = FileHash(path);
        if (inputs.Count > 0) setup["inputs"] = inputs;
        if (settings.GetValueOrDefault("reward") is { } spec && Rewards.RewardSpec.Files(spec, modelDirectory) is { Count: > 0 } files)
            setup["reward_files"] = new JsonArray(files.Select(f => (JsonNode)new JsonObject { ["file"] = f, ["sha256"] = FileHash(f) }).ToArray());
    }

    /// <summary>Checks that the input files the plan names still hold what they held when it was made.</summary>
    /// <exception cref="ConfigException">An input changed or is gone (parameter <c>plan</c>).</exception>
    public void CheckInputs(string source, string? modelDirectory = null)
    {
        if (Setup["reward_files"] is JsonArray recorded)
        {
            // By content and order: a shard that resolves the spec's files elsewhere (another folder) with the same
            // contents runs the same reward; a changed or missing file is refused.
            var now = Settings.GetValueOrDefault("reward") is { } spec ? Rewards.RewardSpec.Files(spec, modelDirectory) : [];
            for (int i = 0; i < recorded.Count; i++)
            {
                string file = (string)recorded[i]!["file"]!;
                if (i >= now.Count) throw ConfigException.For("plan", $"{source}: its reward reads {file}, which is not here (run the shards where the plan's inputs are, e.g. a shared folder)");
                if (FileHash(now[i]) != (string?)recorded[i]!["sha256"])
                    throw ConfigException.For("plan", $"{source}: its reward file {now[i]} is not the one the plan was made with ({file}); make the plan again");
            }
            if (now.Count > recorded.Count)
                throw ConfigException.For("plan", $"{source}: its reward now also reads {now[recorded.Count]}, which the plan was not made with; make the plan again");
        }
        if (Setup["inputs"] is not JsonObject inputs) return;
        foreach (var (name, hash) in inputs)
        {
            string path = Settings.GetValueOrDefault(name) ?? throw ConfigException.For("plan", $"{source}: records input '{name}' but no such setting");
            if (!File.Exists(path)) throw ConfigException.For("plan", $"{source}: its {name} file {path} is not here (run the shards where the plan's inputs are, e.g. a shared folder)");
            if (FileHash(path) != (string?)hash) throw ConfigException.For("plan", $"{source}: its {name} file {path} changed since the plan was made; make the plan again");
        }
    }

    /// <summary>The first 16 hex digits of the SHA-256 of <paramref name="text"/> (UTF-8): a run's identity in reports.</summary>
    public static string ShortHash(string text) => Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(text)))[..16].ToLowerInvariant();

    /// <summary>The canonical JSON (sorted settings and set-up keys, one line, a final newline): equal plans give equal text.</summary>
    public string ToCanonicalJson()
    {
        return new JsonObject
        {
            ["format"] = FormatName,
            ["version"] = Version,
            ["command"] = Command,
            ["model"] = Model,
            ["network_sha256"] = NetworkSha256,
            ["settings"] = RunPlan.SortedSettings(Settings),
            ["setup"] = Sorted(Setup),
        }.ToJsonString() + "\n";
    }

    /// <summary>Writes the plan atomically (its id beside the canonical fields, for people and scripts).</summary>
    public void Write(string path)
    {
        var node = JsonNode.Parse(ToCanonicalJson())!.AsObject();
        node["id"] = Id;
        AtomicFile.WriteText(path, node.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
    }

    /// <summary>Reads a plan written by <see cref="Write"/>.</summary>
    /// <exception cref="ConfigException">Missing, not JSON, not a plan, or with a field missing (parameter <c>plan</c>).</exception>
    public static PlanFile Read(string path)
    {
        if (!File.Exists(path)) throw ConfigException.For("plan", $"{path}: no such file");
        JsonObject node;
        try { node = JsonNode.Parse(File.ReadAllText(path)) as JsonObject ?? throw new JsonException("not a JSON object"); }
        catch (JsonException e) { throw ConfigException.For("plan", $"{path}: not a plan file ({e.Message})"); }
        string Field(string name) => node[name] is JsonValue v && v.TryGetValue(out string? s) ? s
            : throw ConfigException.For("plan", $"{path}: not a plan file (no '{name}')");
        string format = Field("format");
        if (format != FormatName) throw ConfigException.For("plan", $"{path}: format '{format}', expected {FormatName}");
        if (node["settings"] is not JsonObject settings) throw ConfigException.For("plan", $"{path}: not a plan file (no 'settings')");
        var values = new Dictionary<string, string?>();
        foreach (var (name, value) in settings)
            values[name] = value switch
            {
                null => null,
                JsonValue v when v.TryGetValue(out string? s) => s,
                _ => throw ConfigException.For("plan", $"{path}: setting '{name}' is not text"),
            };
        var plan = new PlanFile
        {
            Version = Field("version"), Command = Field("command"), Model = Field("model"), NetworkSha256 = Field("network_sha256"),
            Settings = values, Setup = node["setup"] as JsonObject is { } setup ? (JsonObject)setup.DeepClone() : new JsonObject(),
        };
        if (node["id"] is JsonValue id && id.TryGetValue(out string? written) && written != plan.Id)
            throw ConfigException.For("plan", $"{path}: the plan was edited after it was written (its id {written} is not its content's {plan.Id}); make it again with 'plan'");
        return plan;
    }

    /// <summary>Checks that this plan may run here: made by this version, for this model.</summary>
    /// <exception cref="ConfigException">Another version or another model (parameter <c>plan</c>).</exception>
    public void CheckFor(DiffusionModel model, string source)
    {
        if (Version != CurrentVersion)
            throw ConfigException.For("plan", $"{source}: made by OnnxAlign {Version}, this is {CurrentVersion}: its samples could differ; make the plan again with this version");
        string hash = NetworkHash(model);
        if (hash != NetworkSha256)
            throw ConfigException.For("plan", $"{source}: made for another model (network SHA-256 {NetworkSha256[..12]}…, {model.OnnxPath} has {hash[..12]}…)");
    }

    private static JsonNode Sorted(JsonNode? node) => node switch
    {
        JsonObject o => new JsonObject(o.OrderBy(p => p.Key, StringComparer.Ordinal).Select(p => KeyValuePair.Create(p.Key, p.Value is null ? null : (JsonNode?)Sorted(p.Value)))),
        JsonArray a => new JsonArray(a.Select(v => v is null ? null : (JsonNode?)Sorted(v)).ToArray()),
        null => JsonValue.Create((string?)null)!,
        _ => node.DeepClone(),
    };
}
