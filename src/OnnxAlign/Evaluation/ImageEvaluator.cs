using Microsoft.ML.OnnxRuntime;
using OnnxAlign.Core;
using OnnxAlign.Model;
using OnnxAlign.Rewards;

namespace OnnxAlign.Evaluation;

/// <summary>Class logits and penultimate features of a batch of samples.</summary>
/// <param name="Logits">[n × classes].</param>
/// <param name="Features">[n × features].</param>
/// <param name="Classes">Number of classes.</param>
/// <param name="FeatureCount">Features per sample.</param>
public sealed record Evaluation(float[] Logits, float[] Features, int Classes, int FeatureCount)
{
    /// <summary>Number of samples.</summary>
    public int Count => Logits.Length / Classes;

    /// <summary>The predicted class of sample i.</summary>
    public int Predicted(int i) => Numerics.ArgMax<float>(Logits.AsSpan(i * Classes, Classes));

    /// <summary>Softmax probability of class c for sample i (overflow-safe).</summary>
    public double Probability(int i, int c)
    {
        var row = Logits.AsSpan(i * Classes, Classes).ToArray().Select(v => (double)v).ToArray();
        return Numerics.Softmax(row)[c];
    }
}

/// <summary>
/// An image classifier used only to <em>evaluate</em> samples, never as a reward: any ONNX classifier with a reward card
/// (<see cref="RewardCard"/>: its <c>output</c> is the class logits, its optional <c>features</c> the penultimate layer
/// for the Fréchet distance), fed as the card says — or, without a card, a model with one input and the outputs
/// <c>logits</c> and <c>features</c> that takes samples in [−1, 1] as they are. <c>classes.json</c> beside it names the classes.
/// </summary>
/// <remarks>Owns its sessions (one per sample shape evaluated); dispose it.</remarks>
public sealed class ImageEvaluator : IDisposable
{
    private readonly RewardCard _card;
    private readonly DenoiserOptions _options;
    private readonly DataRange? _range;
    private readonly Dictionary<string, OnnxImageModel> _models = [];
    private bool _disposed;

    /// <summary>Opens the evaluator in <paramref name="directory"/> for samples of <paramref name="sampleShape"/> (null: the model's fixed input shape).</summary>
    /// <param name="directory">A folder with <c>model.onnx</c> and optionally <c>reward.json</c> and <c>classes.json</c>.</param>
    /// <param name="options">How the network is run.</param>
    /// <param name="sampleShape">[C, H, W] of the samples it will see (others open on first use).</param>
    /// <param name="range">The samples' data range (null: [−1, 1]).</param>
    /// <exception cref="ConfigException">Missing files, a bad card, or a model without the outputs it needs (parameter <c>evaluator</c>).</exception>
    public ImageEvaluator(string directory, DenoiserOptions? options = null, IReadOnlyList<int>? sampleShape = null, DataRange? range = null)
    {
        Directory = directory;
        _options = options ?? new DenoiserOptions();
        _range = range;
        string path = Path.Combine(directory, "model.onnx");
        _card = File.Exists(Path.Combine(directory, RewardCard.FileName)) ? RewardCard.Read(directory, "evaluator")
            : File.Exists(path) ? new RewardCard
            {
                Source = path, ModelPath = path, Output = "logits", Features = "features", Normalization = InputNormalization.Range(-1, 1),
                ClassNames = RewardSpec.ClassNames(directory, null),
            }
            : throw ConfigException.For("evaluator", $"{directory}: no model.onnx");
        if (sampleShape is null)
        {
            using var session = OnnxDenoiser.OpenSession(_card.ModelPath, _options);
            var input = session.InputMetadata.Count == 1 ? session.InputMetadata.Values.Single()
                : _card.Input is { } name && session.InputMetadata.TryGetValue(name, out var named) ? named
                : throw ConfigException.For("evaluator", $"{_card.ModelPath}: has inputs {string.Join(", ", session.InputMetadata.Keys)}; its card must name one ('input')");
            var dims = input.Dimensions.Skip(1).ToArray();
            sampleShape = dims.Length == 3 && dims.All(v => v > 0) ? dims
                : throw ConfigException.For("evaluator", $"{_card.ModelPath}: its input [{string.Join(", ", input.Dimensions)}] has no fixed image size; give the samples' shape");
        }
        SampleShape = sampleShape.ToArray();
        var model = ModelFor(SampleShape);
        ClassNames = _card.ClassNames;
        HasFeatures = _card.Features is not null;
        Classes = model.OutputSizes[0];
    }

    /// <summary>The evaluator's folder.</summary>
    public string Directory { get; }

    /// <summary>The sample shape it was opened for.</summary>
    public IReadOnlyList<int> SampleShape { get; }

    /// <summary>Class names from classes.json (empty when absent).</summary>
    public string[] ClassNames { get; }

    /// <summary>Number of classes (values of the logits output).</summary>
    public int Classes { get; }

    /// <summary>True when the evaluator has a feature output (the Fréchet distance needs it).</summary>
    public bool HasFeatures { get; }

    private OnnxImageModel ModelFor(IReadOnlyList<int> shape)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);   // a disposed evaluator would open (and leak) a new session
        string key = string.Join("x", shape);
        if (!_models.TryGetValue(key, out var model))
            _models[key] = model = new OnnxImageModel(_card, shape, _range, _options, parameter: "evaluator");
        return model;
    }

    /// <summary>The index of a class given by name (case-insensitive) or by its number; −1 when the evaluator has no such class.</summary>
    public int ClassIndex(string nameOrIndex)
    {
        ArgumentNullException.ThrowIfNull(nameOrIndex);
        if (int.TryParse(nameOrIndex, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int index))
            return index < Classes ? index : -1;
        return Array.FindIndex(ClassNames, c => string.Equals(c, nameOrIndex, StringComparison.OrdinalIgnoreCase));
    }

    /// <summary>Evaluates <paramref name="count"/> samples of shape <paramref name="sampleShape"/> in batches.</summary>
    public Evaluation Evaluate(ReadOnlySpan<float> samples, int count, IReadOnlyList<int> sampleShape, int batchSize = 256)
    {
        var model = ModelFor(sampleShape);
        string[] outputs = _card.Features is { } f ? [model.OutputName, f] : [model.OutputName];
        var results = model.Run(samples, count, outputs, NetworkCancellation.Current);
        int featureCount = results.Length > 1 && count > 0 ? results[1].Length / count : 0;
        return new Evaluation(results[0], results.Length > 1 ? results[1] : [], Classes, featureCount);
    }

    /// <summary>Disposes its sessions; it cannot evaluate after this (<see cref="ObjectDisposedException"/>).</summary>
    public void Dispose()
    {
        _disposed = true;
        foreach (var model in _models.Values) model.Dispose();
        _models.Clear();
    }
}
