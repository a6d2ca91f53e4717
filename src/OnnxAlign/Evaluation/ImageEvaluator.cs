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
    public int Predicted(int i)
    {
        var row = Logits.AsSpan(i * Classes, Classes);
        int best = 0;
        for (int c = 1; c < Classes; c++) if (row[c] > row[best]) best = c;
        return best;
    }

    /// <summary>Softmax probability of class c for sample i (overflow-safe).</summary>
    public double Probability(int i, int c)
    {
        var row = Logits.AsSpan(i * Classes, Classes).ToArray().Select(v => (double)v).ToArray();
        return Numerics.Softmax(row)[c];
    }
}

/// <summary>
/// An image classifier used only to <em>evaluate</em> samples, never as a reward: an ONNX model with input <c>x</c>
/// [batch, ...sample shape] and outputs <c>logits</c> [batch, classes] and <c>features</c> [batch, F] (penultimate
/// layer, for the Fréchet distance), with <c>classes.json</c> beside it.
/// </summary>
public sealed class ImageEvaluator : IDisposable
{
    private readonly InferenceSession _session;

    /// <summary>Opens <c>model.onnx</c> and <c>classes.json</c> in <paramref name="directory"/>.</summary>
    /// <exception cref="ConfigException">Missing files or a model without the expected outputs.</exception>
    public ImageEvaluator(string directory, DenoiserOptions? options = null)
    {
        Directory = directory;
        string path = Path.Combine(directory, "model.onnx");
        _session = OnnxDenoiser.OpenSession(path, options ?? new DenoiserOptions());
        if (!_session.OutputMetadata.ContainsKey("logits") || !_session.OutputMetadata.ContainsKey("features") || _session.InputMetadata.Count != 1)
        {
            _session.Dispose();
            throw new ConfigException($"{path}: an evaluator needs one input and the outputs 'logits' and 'features'");
        }
        InputName = _session.InputMetadata.Keys.Single();
        SampleShape = _session.InputMetadata[InputName].Dimensions.Skip(1).ToArray();
        ClassNames = RewardSpec.ClassNames(directory, null);
    }

    /// <summary>The evaluator's folder.</summary>
    public string Directory { get; }

    /// <summary>The input's name.</summary>
    public string InputName { get; }

    /// <summary>The input's shape without the batch dimension (negative where dynamic).</summary>
    public IReadOnlyList<int> SampleShape { get; }

    /// <summary>Class names from classes.json (empty when absent).</summary>
    public string[] ClassNames { get; }

    /// <summary>Evaluates <paramref name="count"/> samples of shape <paramref name="sampleShape"/> in batches.</summary>
    public Evaluation Evaluate(ReadOnlySpan<float> samples, int count, IReadOnlyList<int> sampleShape, int batchSize = 256)
    {
        int size = samples.Length / Math.Max(count, 1);
        var logits = new List<float>();
        var features = new List<float>();
        int classes = 0, featureCount = 0;
        using var runOptions = new RunOptions();
        for (int start = 0; start < count; start += batchSize)
        {
            int n = Math.Min(batchSize, count - start);
            var input = samples.Slice(start * size, n * size).ToArray();
            long[] shape = [n, .. sampleShape.Select(d => (long)d)];
            using var value = OrtValue.CreateTensorValueFromMemory(input, shape);
            using var outputs = _session.Run(runOptions, [InputName], [value], ["logits", "features"]);
            var l = outputs[0].GetTensorDataAsSpan<float>();
            var f = outputs[1].GetTensorDataAsSpan<float>();
            classes = l.Length / n;
            featureCount = f.Length / n;
            logits.AddRange(l.ToArray());
            features.AddRange(f.ToArray());
        }
        return new Evaluation(logits.ToArray(), features.ToArray(), classes, featureCount);
    }

    /// <inheritdoc/>
    public void Dispose() => _session.Dispose();
}
