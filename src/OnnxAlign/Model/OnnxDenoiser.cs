using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace OnnxAlign.Model;

/// <summary>
/// The base law: an ONNX Runtime session wrapped as an <see cref="IDenoiser"/> (DESIGN §6–§7). Inputs are bound by
/// name from the session's metadata (<c>sample</c>, <c>timestep</c>, optional <c>encoder_hidden_states</c>, or the
/// only inputs of matching rank), the timestep is converted to the dtype and shape the exporter chose (scalar, [1]
/// or [B]; int64, int32, float or double), and a model with a fixed batch size is fed in chunks. Input and output
/// tensors are allocated once per chunk size and reused across steps.
/// </summary>
/// <remarks>Thread-safe: calls on one instance are serialised (they share buffers). For parallel generation open
/// one denoiser per thread; each owns its session.</remarks>
public sealed class OnnxDenoiser : IDenoiser, IDisposable
{
    private readonly InferenceSession _session;
    private readonly PredictionType _predictionType;
    private readonly string _sampleName, _timestepName, _outputName;
    private readonly string? _conditioningName;
    private readonly long[]? _conditioningShape;
    private readonly TensorElementType _timestepType;
    private readonly int _timestepRank;        // 0 = scalar, 1 = vector
    private readonly int _fixedTimestepLength; // > 0 when the timestep vector has a fixed length
    private readonly int _fixedBatch;          // > 0 when the model's batch dimension is fixed
    private readonly int[] _sampleShape;
    private readonly Dictionary<int, Binding> _bindings = [];
    private readonly object _gate = new();
    private bool _disposed;

    /// <summary>Opens <paramref name="onnxPath"/> for the given schedule.</summary>
    /// <exception cref="ConfigException">The file is not a usable ONNX model, its inputs match no supported convention,
    /// or the requested device is not available.</exception>
    public OnnxDenoiser(string onnxPath, NoiseSchedule schedule, DenoiserOptions options)
    {
        Schedule = schedule;
        _predictionType = schedule.Config.PredictionType;
        Device = options.Device;
        _session = OpenSession(onnxPath, options);
        try
        {
            var inputs = _session.InputMetadata;
            _sampleName = PickInput(onnxPath, inputs, "sample", m => m.Dimensions.Length is 2 or 4 && m.ElementDataType == TensorElementType.Float);
            _timestepName = PickInput(onnxPath, inputs, "timestep", m => m.Dimensions.Length <= 1, exclude: _sampleName);
            var sample = inputs[_sampleName];
            var timestep = inputs[_timestepName];
            if (sample.ElementDataType != TensorElementType.Float)
                throw new ConfigException($"{onnxPath}: input '{_sampleName}' is {sample.ElementDataType}, expected float32");
            _timestepType = timestep.ElementDataType;
            if (_timestepType is not (TensorElementType.Int64 or TensorElementType.Int32 or TensorElementType.Float or TensorElementType.Double))
                throw new ConfigException($"{onnxPath}: input '{_timestepName}' is {_timestepType}, expected int64, int32, float or double");
            _timestepRank = timestep.Dimensions.Length;
            if (_timestepRank > 1)
                throw new ConfigException($"{onnxPath}: input '{_timestepName}' has rank {_timestepRank}, expected a scalar, [1] or [batch]");
            _fixedTimestepLength = _timestepRank == 1 && timestep.Dimensions[0] > 0 ? timestep.Dimensions[0] : 0;

            _fixedBatch = sample.Dimensions[0] > 0 ? sample.Dimensions[0] : 0;
            _sampleShape = ResolveSampleShape(onnxPath, sample, options.SampleShape);
            SampleSize = _sampleShape.Aggregate(1, (a, b) => a * b);
            if (_fixedTimestepLength > 1 && _fixedTimestepLength != _fixedBatch)
                throw new ConfigException($"{onnxPath}: input '{_timestepName}' has fixed length {_fixedTimestepLength} but the batch is {(_fixedBatch > 0 ? _fixedBatch : "dynamic")}");

            var extra = inputs.Keys.Where(k => k != _sampleName && k != _timestepName).ToList();
            if (extra.Count > 1 || (extra.Count == 1 && extra[0] != "encoder_hidden_states"))
                throw new ConfigException($"{onnxPath}: unexpected inputs {string.Join(", ", extra)} (supported: sample, timestep, optional encoder_hidden_states)");
            if (extra.Count == 1)
            {
                // Unconditional use of a conditional network: zeros of the declared shape.
                var meta = inputs[extra[0]];
                if (meta.Dimensions.Skip(1).Any(d => d <= 0))
                    throw new ConfigException($"{onnxPath}: encoder_hidden_states has dynamic dimensions; conditioning input is not supported");
                _conditioningName = extra[0];
                _conditioningShape = meta.Dimensions.Select(d => (long)d).ToArray();
            }

            var outputs = _session.OutputMetadata;
            _outputName = outputs.Count == 1 ? outputs.Keys.First()
                : outputs.ContainsKey("out_sample") ? "out_sample"
                : throw new ConfigException($"{onnxPath}: {outputs.Count} outputs and none named out_sample");
            var outDims = outputs[_outputName].Dimensions;
            if (outDims.Length != sample.Dimensions.Length
                || outDims.Skip(1).Zip(_sampleShape).Any(p => p.First > 0 && p.First != p.Second))
                throw new ConfigException($"{onnxPath}: output '{_outputName}' has shape [{string.Join(", ", outDims)}], expected the sample's shape [B, {string.Join(", ", _sampleShape)}]");
        }
        catch
        {
            _session.Dispose();
            throw;
        }
    }

    /// <inheritdoc/>
    public IReadOnlyList<int> SampleShape => _sampleShape;

    /// <inheritdoc/>
    public int SampleSize { get; }

    /// <inheritdoc/>
    public NoiseSchedule Schedule { get; }

    /// <summary>The device the session runs on.</summary>
    public string Device { get; }

    /// <summary>The batch size the model requires, or null when its batch dimension is dynamic.</summary>
    public int? FixedBatchSize => _fixedBatch > 0 ? _fixedBatch : null;

    /// <summary>A one-paragraph description of the bound inputs and output (for <c>onnxalign inspect</c>).</summary>
    public string Describe()
    {
        static string Dims(NodeMetadata m) => "[" + string.Join(", ", m.Dimensions.Select((d, i) => d > 0 ? d.ToString() : m.SymbolicDimensions[i] is { Length: > 0 } s ? s : "?")) + "]";
        var lines = _session.InputMetadata.Select(kv => $"  input  {kv.Key}: {kv.Value.ElementDataType} {Dims(kv.Value)}")
            .Concat(_session.OutputMetadata.Select(kv => $"  output {kv.Key}: {kv.Value.ElementDataType} {Dims(kv.Value)}"));
        return string.Join(Environment.NewLine, lines);
    }

    /// <inheritdoc/>
    public void PredictNoise(ReadOnlySpan<float> x, int batchSize, double timestep, Span<float> noise)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        int size = SampleSize;
        if (x.Length != batchSize * size || noise.Length != x.Length)
            throw new ArgumentException($"expected {batchSize} × {size} values");
        var (alpha, sigma) = Schedule.AlphaSigma(timestep);
        lock (_gate)
        {
            int chunk = _fixedBatch > 0 ? _fixedBatch : batchSize;
            var binding = BindingFor(chunk);
            binding.SetTimestep(timestep);
            for (int start = 0; start < batchSize; start += chunk)
            {
                int n = Math.Min(chunk, batchSize - start);
                var input = binding.Sample.AsSpan();
                x.Slice(start * size, n * size).CopyTo(input);
                input[(n * size)..].Clear(); // padding of a fixed-batch model's last chunk
                _session.Run(binding.RunOptions, binding.InputNames, binding.Inputs, binding.OutputNames, binding.Outputs);
                binding.Output.AsSpan(0, n * size).CopyTo(noise.Slice(start * size, n * size));
            }
        }
        Prediction.ToNoise(_predictionType, x, noise, alpha, sigma);
    }

    /// <summary>
    /// For benchmarks: the wall time of <paramref name="runs"/> bare <c>session.Run</c> calls on one batch of
    /// <paramref name="batchSize"/> with this denoiser's own pre-bound tensors, i.e. the floor of any sampling loop
    /// over this network (no sampler arithmetic, no conversions, no copies).
    /// </summary>
    public TimeSpan TimeBareRuns(int batchSize, int runs, double timestep = 500)
    {
        lock (_gate)
        {
            var binding = BindingFor(_fixedBatch > 0 ? _fixedBatch : batchSize);
            binding.SetTimestep(timestep);
            for (int i = 0; i < binding.Sample.Length; i++) binding.Sample[i] = (i * 0.618034f) % 2 - 1; // finite, data-like values
            var clock = System.Diagnostics.Stopwatch.StartNew();
            for (int r = 0; r < runs; r++)
                _session.Run(binding.RunOptions, binding.InputNames, binding.Inputs, binding.OutputNames, binding.Outputs);
            return clock.Elapsed;
        }
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        foreach (var b in _bindings.Values) b.Dispose();
        _session.Dispose();
    }

    private Binding BindingFor(int chunk)
    {
        if (!_bindings.TryGetValue(chunk, out var binding))
        {
            // Keep a handful of chunk sizes (the last batch of a run is often smaller).
            if (_bindings.Count >= 4)
            {
                foreach (var b in _bindings.Values) b.Dispose();
                _bindings.Clear();
            }
            binding = new Binding(this, chunk);
            _bindings[chunk] = binding;
        }
        return binding;
    }

    /// <summary>An ONNX Runtime session with the project's options (threads, denormals, device), errors as <see cref="ConfigException"/>.</summary>
    internal static InferenceSession OpenSession(string onnxPath, DenoiserOptions options)
    {
        if (!File.Exists(onnxPath)) throw new ConfigException($"{onnxPath}: no such file");
        var so = new SessionOptions
        {
            GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL,
            IntraOpNumThreads = options.IntraOpThreads ?? Environment.ProcessorCount,
        };
        // Shifted inputs (a tilt evaluates the network far from its data, DESIGN §1b) drive saturating activations
        // into denormal floats, which are many times slower on x86; flushing them to zero changes no result visibly.
        so.AddSessionConfigEntry("session.set_denormal_as_zero", "1");
        try
        {
            if (options.CudaDeviceId is { } deviceId)
            {
                if (!OrtEnv.Instance().GetAvailableProviders().Contains("CUDAExecutionProvider"))
                    throw new ConfigException(
                        $"--device {options.Device}: this ONNX Runtime build has no CUDA support. Build with " +
                        "-p:OnnxRuntimePackage=Microsoft.ML.OnnxRuntime.Gpu (and CUDA 12 + cuDNN 9 installed) to use a GPU; see README, Troubleshooting.");
                try { so.AppendExecutionProvider_CUDA(deviceId); }
                catch (OnnxRuntimeException e)
                {
                    throw new ConfigException($"--device {options.Device}: the CUDA execution provider could not start ({e.Message}). Check the CUDA/cuDNN install and the device index.", e);
                }
            }
            return new InferenceSession(onnxPath, so);
        }
        catch (OnnxRuntimeException e)
        {
            throw new ConfigException($"{onnxPath}: not a usable ONNX model ({FirstLine(e.Message)})", e);
        }
        finally
        {
            so.Dispose();
        }
    }

    private static string FirstLine(string s) => s.Split('\n')[0].Trim();

    private static string PickInput(string path, IReadOnlyDictionary<string, NodeMetadata> inputs, string name, Func<NodeMetadata, bool> fits, string? exclude = null)
    {
        if (inputs.ContainsKey(name)) return name;
        var candidates = inputs.Where(kv => kv.Key != exclude && kv.Key != "encoder_hidden_states" && kv.Value.IsTensor && fits(kv.Value)).Select(kv => kv.Key).ToList();
        return candidates.Count == 1
            ? candidates[0]
            : throw new ConfigException($"{path}: cannot tell which input is the {name} (inputs: {string.Join(", ", inputs.Keys)}); name it '{name}'");
    }

    private static int[] ResolveSampleShape(string path, NodeMetadata sample, IReadOnlyList<int>? requested)
    {
        var dims = sample.Dimensions.Skip(1).ToArray();
        if (requested is not null)
        {
            if (requested.Count != dims.Length || requested.Zip(dims).Any(p => p.First <= 0 || (p.Second > 0 && p.Second != p.First)))
                throw new ConfigException($"{path}: sample shape [{string.Join(", ", requested)}] does not fit input [{string.Join(", ", sample.Dimensions)}]");
            return requested.ToArray();
        }
        if (dims.Any(d => d <= 0))
            throw new ConfigException($"{path}: the sample's shape [{string.Join(", ", sample.Dimensions)}] is dynamic; give it with --shape (e.g. 3x64x64)");
        return dims;
    }

    /// <summary>Pinned input/output tensors for one chunk size, reused across steps.</summary>
    private sealed class Binding : IDisposable
    {
        private readonly Array _timestep;

        public Binding(OnnxDenoiser owner, int chunk)
        {
            int size = owner.SampleSize;
            Sample = new float[chunk * size];
            Output = new float[chunk * size];
            long[] shape = [chunk, .. owner._sampleShape.Select(d => (long)d)];
            int timestepLength = owner._timestepRank == 0 ? 1 : owner._fixedTimestepLength > 0 ? owner._fixedTimestepLength : chunk;
            long[] timestepShape = owner._timestepRank == 0 ? [] : [timestepLength];
            _timestep = owner._timestepType switch
            {
                TensorElementType.Int64 => new long[timestepLength],
                TensorElementType.Int32 => new int[timestepLength],
                TensorElementType.Double => new double[timestepLength],
                _ => new float[timestepLength],
            };
            var inputs = new List<OrtValue>
            {
                OrtValue.CreateTensorValueFromMemory(Sample, shape),
                _timestep switch
                {
                    long[] a => OrtValue.CreateTensorValueFromMemory(a, timestepShape),
                    int[] a => OrtValue.CreateTensorValueFromMemory(a, timestepShape),
                    double[] a => OrtValue.CreateTensorValueFromMemory(a, timestepShape),
                    float[] a => OrtValue.CreateTensorValueFromMemory(a, timestepShape),
                    _ => throw new InvalidOperationException(),
                },
            };
            var names = new List<string> { owner._sampleName, owner._timestepName };
            if (owner._conditioningName is { } c)
            {
                long[] cshape = [chunk, .. owner._conditioningShape!.Skip(1)];
                inputs.Add(OrtValue.CreateTensorValueFromMemory(new float[cshape.Aggregate(1L, (a, b) => a * b)], cshape));
                names.Add(c);
            }
            Inputs = inputs;
            InputNames = names;
            Outputs = [OrtValue.CreateTensorValueFromMemory(Output, shape)];
            OutputNames = [owner._outputName];
        }

        public float[] Sample { get; }
        public float[] Output { get; }
        public IReadOnlyCollection<OrtValue> Inputs { get; }
        public IReadOnlyCollection<string> InputNames { get; }
        public IReadOnlyCollection<OrtValue> Outputs { get; }
        public IReadOnlyCollection<string> OutputNames { get; }
        public RunOptions RunOptions { get; } = new();

        public void SetTimestep(double t)
        {
            switch (_timestep)
            {
                case long[] a: Array.Fill(a, (long)Math.Round(t)); break;
                case int[] a: Array.Fill(a, (int)Math.Round(t)); break;
                case double[] a: Array.Fill(a, t); break;
                case float[] a: Array.Fill(a, (float)t); break;
            }
        }

        public void Dispose()
        {
            foreach (var v in Inputs) v.Dispose();
            foreach (var v in Outputs) v.Dispose();
            RunOptions.Dispose();
        }
    }
}
